"""Transfer learning: reuse what a network already learned (``cnnkit.transfer``).

- :func:`train`: ``cnnkit train pretrained=RUN_OR_FILE freeze=backbone bn=freeze_stats``;
- :func:`load_source`: pretrained weights with the preprocessing they expect;
- :func:`apply_freeze`, :func:`stages`: freeze the backbone or its first K stages, with an
  explicit batch-norm policy;
- :func:`cached_features`: the frozen backbone's output, computed once;
- :func:`fine_tune_groups`: head first, then the last stages at lower learning rates.
"""

from cnnkit.transfer.features import HeadOnFeatures, cache_dir, cached_features, features_of
from cnnkit.transfer.freezing import BN_POLICIES, FreezeReport, apply_freeze, head_of, stages
from cnnkit.transfer.pretrained import Source, check_preprocess, load_source, with_preprocess
from cnnkit.transfer.training import auto_unfreeze, build, fine_tune_groups, plan, resume, train

__all__ = [
    "BN_POLICIES",
    "FreezeReport",
    "HeadOnFeatures",
    "Source",
    "apply_freeze",
    "auto_unfreeze",
    "build",
    "cache_dir",
    "cached_features",
    "check_preprocess",
    "features_of",
    "fine_tune_groups",
    "head_of",
    "load_source",
    "plan",
    "resume",
    "stages",
    "train",
    "with_preprocess",
]
