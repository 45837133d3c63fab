"""Datasets on a device: official formats with checksummed downloads, local files, generated
tasks; seeded subsets, label and input corruption with masks; normalization; batching.

>>> from sgdlab.config import DataConfig
>>> bundle = load_data(DataConfig(name="gaussian-mixture", n_train=100, n_test=50), seed=0)
>>> bundle.x_train.shape, bundle.y_train.shape, bundle.input_shape
(torch.Size([100, 20]), torch.Size([100]), (20,))
>>> [len(idx) for idx in iterate_batches(bundle.n_train, 32, seed=0, epoch=0)]
[32, 32, 32]
"""

from sgdlab.data.batching import batches_per_epoch, epoch_permutation, iterate_batches
from sgdlab.data.bundle import DataBundle, load_data
from sgdlab.data.cache import DATA_CACHE, cached_load_data
from sgdlab.data.download import cache_root, data_root


def check_data(cfg) -> None:
    """Resolve a loader of one's own (``data.name`` an import path) without loading."""
    from sgdlab.imports import is_import_path

    if is_import_path(cfg.name):
        from sgdlab.data.user import check_loader

        check_loader(cfg)

__all__ = [
    "DATA_CACHE",
    "DataBundle",
    "cached_load_data",
    "batches_per_epoch",
    "cache_root",
    "check_data",
    "data_root",
    "epoch_permutation",
    "iterate_batches",
    "load_data",
]
