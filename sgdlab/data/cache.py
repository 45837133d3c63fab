"""A process-wide cache of loaded datasets, so that the runs of a sweep trained one after
another in one process (a worker, an ensemble, a notebook) load each dataset once.

The key is the resolved data config (its JSON), the seed (subsets, corruption and
generated data depend on it), the device and the dtype: two runs that would build equal
bundles share one. The cache holds the ``MAX_ENTRIES`` most recently used bundles; the
trainer treats a bundle as read-only (it indexes it, never writes into it), so sharing one
cannot change a run.

>>> from sgdlab.config import DataConfig
>>> a = cached_load_data(DataConfig(name="gaussian-mixture", n_train=64, n_test=16), seed=0)
>>> b = cached_load_data(DataConfig(name="gaussian-mixture", n_train=64, n_test=16), seed=0)
>>> a is b, DATA_CACHE.hits >= 1
(True, True)
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict

import torch

from sgdlab.config import DataConfig
from sgdlab.data.bundle import DataBundle, load_data

MAX_ENTRIES = 2  # a sweep alternates between at most a few data configs at a time


class DataCache:
    """Least-recently-used :class:`DataBundle` s keyed by (config, seed, device, dtype)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._bundles: OrderedDict[tuple, DataBundle] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, cfg: DataConfig, seed: int, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32) -> DataBundle:
        key = (json.dumps(asdict(cfg), sort_keys=True), int(seed), str(torch.device(device)),
               str(dtype))
        if key in self._bundles:
            self.hits += 1
            self._bundles.move_to_end(key)
            return self._bundles[key]
        self.misses += 1
        bundle = load_data(cfg, seed, device, dtype)
        self._bundles[key] = bundle
        while len(self._bundles) > self.max_entries:
            self._bundles.popitem(last=False)
        return bundle

    def clear(self) -> None:
        self._bundles.clear()


DATA_CACHE = DataCache()


def cached_load_data(cfg: DataConfig, seed: int, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> DataBundle:
    """:func:`~sgdlab.data.load_data` through :data:`DATA_CACHE`."""
    return DATA_CACHE.get(cfg, seed, device, dtype)
