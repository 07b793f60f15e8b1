"""Datasets and their splits: ``cnnkit.data.load("digits")`` and friends.

Sources: scikit-learn's bundled digits, MNIST / Fashion-MNIST IDX files, CIFAR python
batches, ImageFolder directories and multi-label CSV manifests (``labels.csv``: image
paths and 0/1/? labels), all read into memory as uint8 tensors, split (stratified,
seeded) into train / dev / test and an optional train-dev split, and normalized with
statistics of the training split only. :mod:`cnnkit.data.synthetic` draws a synthetic
multi-label task (the course's autonomous-driving example). :mod:`cnnkit.data.signals`
reads folders of ``.npy`` / ``.csv`` 1D signals and 3D volumes (float32
:class:`ArraySet` splits) and draws synthetic waveform and shape-volume tasks.
"""

from cnnkit.data.augment import Augment, TensorBatches, epoch_order, fit_pca, preview_grid
from cnnkit.data.datasets import (
    ArrayBatches,
    ArraySet,
    Data,
    DataInfo,
    ImageSet,
    Preprocess,
    array_stats,
    channel_stats,
    default_workers,
    resize_uint8,
    seed_worker,
    stratified_split,
)
from cnnkit.data.formats import (
    Manifest,
    read_cifar,
    read_digits,
    read_idx,
    read_manifest,
    read_mnist,
)
from cnnkit.data.images import BadFile, ImageDecodeError, decode_image
from cnnkit.data.signals import (
    load_arrays,
    synth_signals,
    synth_volumes,
    write_signals,
    write_volumes,
)
from cnnkit.data.sources import (
    DATASETS,
    MAX_BAD_FRACTION,
    FolderReport,
    check_folder,
    default_data_dir,
    load,
    resolve_source,
)
from cnnkit.data.synthetic import SCENE_LABELS, multilabel_scenes, write_scenes

__all__ = [
    "DATASETS",
    "MAX_BAD_FRACTION",
    "SCENE_LABELS",
    "ArrayBatches",
    "ArraySet",
    "Augment",
    "BadFile",
    "Data",
    "DataInfo",
    "FolderReport",
    "ImageDecodeError",
    "ImageSet",
    "Manifest",
    "Preprocess",
    "TensorBatches",
    "array_stats",
    "channel_stats",
    "check_folder",
    "decode_image",
    "default_data_dir",
    "default_workers",
    "epoch_order",
    "fit_pca",
    "load",
    "load_arrays",
    "multilabel_scenes",
    "preview_grid",
    "read_cifar",
    "read_digits",
    "read_idx",
    "read_manifest",
    "read_mnist",
    "resize_uint8",
    "resolve_source",
    "seed_worker",
    "stratified_split",
    "synth_signals",
    "synth_volumes",
    "write_scenes",
    "write_signals",
    "write_volumes",
]
