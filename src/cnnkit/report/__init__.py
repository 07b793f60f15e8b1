"""Reports and plots of what a network learned (filters, feature maps, top patches).

Each plot returns a :class:`matplotlib.figure.Figure`; save it with
``fig.savefig("filters.png")``.
"""

from cnnkit.report.filters import feature_maps, find_layer, plot_feature_maps, plot_filters
from cnnkit.report.html import RunReport, write_report
from cnnkit.report.receptive import TopPatches, layer_stack, plot_top_patches, top_patches

__all__ = [
    "RunReport",
    "TopPatches",
    "feature_maps",
    "find_layer",
    "layer_stack",
    "plot_feature_maps",
    "plot_filters",
    "plot_top_patches",
    "top_patches",
    "write_report",
]
