"""Subsets, normalization and corruptions of sgdlab.data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdlab.config import DataConfig
from sgdlab.data import load_data
from sgdlab.data import transforms as T
from sgdlab.errors import ConfigError

ZERO, ONE = torch.zeros(1, 28, 28, dtype=torch.float64), torch.ones(1, 28, 28, dtype=torch.float64)


@pytest.fixture
def images(tmp_path):
    """A tiny class-sorted image dataset as .npz: 200 train / 50 test random 28x28 uint8."""
    g = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=g.integers(0, 256, (200, 28, 28), dtype=np.uint8),
             y_train=np.repeat(np.arange(10), 20).astype(np.uint8),
             x_test=g.integers(0, 256, (50, 28, 28), dtype=np.uint8),
             y_test=np.repeat(np.arange(10), 5).astype(np.uint8))
    return path


def cfg_for(path, **kw) -> DataConfig:
    return DataConfig(name="mnist", file=str(path), **kw)


def test_subset_seeded_and_stratified():
    y = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    a = T.subset_indices(y, 203, 1, "t", False, 10, "data.n_train", "examples")
    assert np.array_equal(a, T.subset_indices(y, 203, 1, "t", False, 10, "data.n_train", "x"))
    assert not np.array_equal(a, T.subset_indices(y, 203, 2, "t", False, 10, "data.n_train", "x"))
    s = T.subset_indices(y, 203, 1, "t", True, 10, "data.n_train", "examples")
    assert len(set(s.tolist())) == 203
    counts = np.bincount(y[s], minlength=10)
    assert counts.min() >= 20 and counts.max() <= 21 and counts.sum() == 203
    assert not np.all(np.diff(y[s]) >= 0)  # shuffled, not grouped by class
    full = T.subset_indices(y, 0, 1, "t", False, 10, "data.n_train", "examples")
    assert sorted(full.tolist()) == list(range(len(y))) and not np.array_equal(full, np.sort(full))
    with pytest.raises(ConfigError, match="^data.n_test: 951 exceeds the 950 test examples"):
        T.subset_indices(y, 951, 1, "t", False, 10, "data.n_test", "test examples")
    with pytest.raises(ConfigError, match="data.n_train: a stratified subset of 600 needs 60"):
        T.subset_indices(y, 600, 1, "t", True, 10, "data.n_train", "examples")


def test_subset_through_load_data(images):
    a = load_data(cfg_for(images, n_train=40, n_test=10, stratified=True), seed=1)
    b = load_data(cfg_for(images, n_train=40, n_test=10, stratified=True), seed=1)
    c = load_data(cfg_for(images, n_train=40, n_test=10, stratified=True), seed=2)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train).tolist() == [4] * 10
    assert torch.bincount(a.y_test).tolist() == [1] * 10


def test_normalization_statistics(images):
    raw = np.load(images)["x_train"].astype(np.float64) / 255
    none = load_data(cfg_for(images, normalize="none"), seed=0, dtype=torch.float64)
    assert float(none.x_train.max()) > 200 and torch.all(none.input_scale == 255)
    unit = load_data(cfg_for(images, normalize="unit"), seed=0, dtype=torch.float64)
    assert torch.allclose(unit.x_train * 255, none.x_train) and torch.all(unit.input_scale == 1)
    center = load_data(cfg_for(images, normalize="center"), seed=0, dtype=torch.float64)
    assert torch.allclose(center.x_train.mean(0), ZERO, atol=1e-12)
    std = load_data(cfg_for(images, normalize="standardize"), seed=0, dtype=torch.float64)
    mean, sd = raw.mean(0), raw.std(0)
    assert torch.allclose(std.x_train.mean(0), ZERO, atol=1e-12)
    assert torch.allclose(std.x_train.std(0, unbiased=False), ONE)
    np.testing.assert_allclose(std.input_scale.numpy()[0], 1 / sd)
    test_raw = np.load(images)["x_test"].astype(np.float64) / 255  # test uses train statistics
    expect = np.sort(((test_raw - mean) / sd).reshape(50, -1), axis=0)
    got = np.sort(std.x_test.numpy().reshape(50, -1), axis=0)
    np.testing.assert_allclose(got, expect, atol=1e-12)
    flat = load_data(cfg_for(images, flatten=True), seed=0)
    assert flat.input_shape == (784,) and flat.input_scale.shape == (784,)


def test_std_clamped_and_vector_unit():
    x = np.zeros((10, 3))
    x[:, 0] = np.arange(10)
    x[0, 1] = 1e-6  # almost constant feature
    _, _, scale = T.normalize(x.copy(), x.copy(), "standardize", None)
    assert scale[1] <= 1 / (T.STD_FLOOR * np.std(x, 0).mean()) + 1e-9 and np.isfinite(scale[2])
    bundle = load_data(DataConfig(name="gaussian-mixture", normalize="unit", n_train=300), 0)
    x = bundle.x_train
    assert torch.allclose(x.min(0).values, torch.zeros(20)) and torch.allclose(x.max(0).values,
                                                                               torch.ones(20))


@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_label_noise_exact_and_masked(images, p):
    bundle = load_data(cfg_for(images, label_noise=p, n_train=150), seed=3)
    mask = bundle.label_corrupted
    assert int(mask.sum()) == round(p * 150) and not bundle.input_corrupted.any()
    changed = bundle.y_train != bundle.y_train_clean
    assert not torch.any(changed & ~mask)  # labels change only under the mask
    if p == 1.0:  # random labels: ~90% differ from the true label, all in range
        assert 0.8 < float(changed.float().mean()) < 0.97 and int(bundle.y_train.max()) <= 9
    assert torch.equal(bundle.corrupted, mask)
    again = load_data(cfg_for(images, label_noise=p, n_train=150), seed=3)
    assert torch.equal(again.y_train, bundle.y_train)


def unique_pixels(n: int, channels: int, positions: int) -> np.ndarray:
    """x[i, c, j] = 10000 i + 100 c + j: every value tells its image, channel and position."""
    i, c, j = np.ogrid[:n, :channels, :positions]
    return (10000.0 * i + 100 * c + j).astype(np.float64)


def test_shuffled_pixels_one_permutation(monkeypatch):
    monkeypatch.setattr(T, "_CHUNK", 12)  # images are processed in chunks of 3
    x = unique_pixels(40, 3, 16)
    out, mask = T.corrupt_inputs(x.reshape(40, 3, 4, 4), "shuffled-pixels", 0.5, 0, channels=3)
    out = out.reshape(40, 3, 16)
    assert mask.sum() == 20
    assert np.array_equal(out[~mask], x[~mask])
    perms = (out[mask] % 100).astype(int)  # position each pixel came from
    assert np.all(perms == perms[0, 0])  # same permutation for every image and channel
    assert not np.array_equal(perms[0, 0], np.arange(16))
    assert np.array_equal(out[mask] // 100, x[mask] // 100)  # channels kept together


def test_random_pixels_per_image(monkeypatch):
    monkeypatch.setattr(T, "_CHUNK", 12)
    x = unique_pixels(30, 1, 64)
    out, mask = T.corrupt_inputs(x.reshape(30, 64), "random-pixels", 1.0, 0, channels=0)
    assert mask.all()
    perms = (out % 100).astype(int)
    assert np.array_equal(np.sort(out, axis=1), np.sort(x[:, 0], axis=1))  # multiset kept
    assert len({tuple(p) for p in perms}) == 30  # a different permutation per image


def test_input_corruption_through_load_data(images):
    clean = load_data(cfg_for(images, normalize="none", n_train=100), seed=2)
    for kind in ("shuffled-pixels", "random-pixels", "gaussian"):
        cfg = cfg_for(images, normalize="none", n_train=100, input_corruption=kind,
                      input_corruption_fraction=0.3)
        bundle = load_data(cfg, seed=2)
        mask = bundle.input_corrupted
        assert int(mask.sum()) == 30 and not bundle.label_corrupted.any()
        diff = (bundle.x_train != clean.x_train).flatten(1).any(1)
        assert torch.equal(diff, mask)
        assert torch.equal(bundle.x_test, clean.x_test)
        assert torch.equal(bundle.y_train, clean.y_train)
        if kind != "gaussian":
            assert torch.equal(bundle.x_train.flatten(1).sort(1).values,
                               clean.x_train.flatten(1).sort(1).values)
        else:
            noise = bundle.x_train[mask]
            assert abs(float(noise.mean()) - float(clean.x_train.mean())) < 2
            assert abs(float(noise.std()) - float(clean.x_train.std())) < 2


def test_normalization_after_corruption(images):
    cfg = cfg_for(images, input_corruption="gaussian", normalize="standardize")
    bundle = load_data(cfg, seed=0, dtype=torch.float64)
    assert torch.allclose(bundle.x_train.mean(0), ZERO, atol=1e-10)
    assert torch.allclose(bundle.x_train.std(0, unbiased=False), ONE)
