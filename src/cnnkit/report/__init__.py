"""Reports and plots of what a network learned (filters, feature maps).

Each plot returns a :class:`matplotlib.figure.Figure`; save it with
``fig.savefig("filters.png")``.
"""

from cnnkit.report.filters import feature_maps, find_layer, plot_feature_maps, plot_filters

__all__ = ["feature_maps", "find_layer", "plot_feature_maps", "plot_filters"]
