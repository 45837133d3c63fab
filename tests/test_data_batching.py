"""Epoch permutations, batching and the data folder of sgdlab.data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgdlab.data import batches_per_epoch, cache_root, data_root, epoch_permutation, iterate_batches
from sgdlab.errors import ConfigError


def test_epoch_permutation_deterministic_and_isolated():
    torch.manual_seed(0)
    a = epoch_permutation(100, seed=3, epoch=2, device="cpu")
    state = torch.get_rng_state()
    torch.manual_seed(999)
    torch.rand(7)
    b = epoch_permutation(100, seed=3, epoch=2, device="cpu")
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert sorted(a.tolist()) == list(range(100))
    torch.manual_seed(0)
    epoch_permutation(100, seed=3, epoch=2, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG did not move
    assert not torch.equal(a, epoch_permutation(100, seed=3, epoch=3, device="cpu"))
    assert not torch.equal(a, epoch_permutation(100, seed=4, epoch=2, device="cpu"))


def test_iterate_batches_drops_partial_and_resumes():
    perm = epoch_permutation(103, seed=1, epoch=5, device="cpu")
    batches = list(iterate_batches(103, 10, seed=1, epoch=5, device="cpu"))
    assert len(batches) == batches_per_epoch(103, 10) == 10
    assert all(len(b) == 10 for b in batches)
    assert torch.equal(torch.cat(batches), perm[:100])
    tail = list(iterate_batches(103, 10, seed=1, epoch=5, device="cpu", start=7))
    assert len(tail) == 3 and all(torch.equal(x, y) for x, y in zip(tail, batches[7:]))
    assert list(iterate_batches(103, 10, seed=1, epoch=5, device="cpu", start=10)) == []
    (full,) = iterate_batches(103, 103, seed=1, epoch=5, device="cpu")
    assert torch.equal(full, perm)
    with pytest.raises(ConfigError, match="optim.batch_size: 104 exceeds the 103"):
        list(iterate_batches(103, 104, seed=1, epoch=5, device="cpu"))


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("SGDLAB_CACHE", raising=False)  # the cache folder's own variable
    monkeypatch.setenv("SGDLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("SGDLAB_DATA")
    assert data_root() == tmp_path / "xdg" / "sgdlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == Path(tmp_path / "home" / ".cache" / "sgdlab")
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path / "c"))
    assert data_root() == cache_root() == tmp_path / "c"
