"""Datasets of sgdlab.data: the offline copies, digits, MNIST-1D and the synthetic tasks."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sgdlab.config import DataConfig
from sgdlab.data import load_data, sources
from sgdlab.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "fashion_mnist.npz").is_file(),
                                  reason="offline dataset copies not present")


@needs_shared
def test_fashion_mnist_offline_subset_is_balanced():
    cfg = DataConfig(name="fashion-mnist", root=str(SHARED), download=False, n_train=1000,
                     n_test=500)
    bundle = load_data(cfg, seed=3)
    assert bundle.source.endswith("fashion_mnist.npz")
    assert bundle.x_train.shape == (1000, 1, 28, 28) and bundle.n_test == 500
    counts = torch.bincount(bundle.y_train, minlength=10)
    assert counts.min() >= 60 and counts.max() <= 140  # the file is sorted by class
    assert torch.bincount(bundle.y_test, minlength=10).min() >= 25
    with pytest.raises(ConfigError, match="^data.n_train: 70000 exceeds the 60000 training "
                                          "examples of fashion-mnist$"):
        load_data(DataConfig(name="fashion-mnist", root=str(SHARED), n_train=70000), seed=0)


@needs_shared
def test_mnist_falls_back_to_mnist_10k():
    cfg = DataConfig(name="mnist", root=str(SHARED), download=False, n_train=100,
                     stratified=True, normalize="unit")
    bundle = load_data(cfg, seed=0)
    assert bundle.source.endswith("mnist_10k.npz")
    assert torch.bincount(bundle.y_train).tolist() == [10] * 10
    assert bundle.n_test == 2000
    assert float(bundle.x_train.min()) >= 0 and float(bundle.x_train.max()) <= 1


def test_digits_split_and_scale():
    bundle = load_data(DataConfig(name="digits", normalize="none"), seed=0)
    assert (bundle.n_train, bundle.n_test, bundle.input_shape) == (1437, 360, (1, 8, 8))
    assert float(bundle.x_train.max()) == 16 and torch.all(bundle.input_scale == 16)
    unit = load_data(DataConfig(name="digits", normalize="unit"), seed=5)
    assert float(unit.x_train.max()) == 1.0
    # the split is fixed; the seed only permutes (and subsets) within it
    def rows(x):
        return sorted(map(tuple, (x.reshape(len(x), -1) * 16).round().tolist()))

    assert rows(unit.x_test) == rows(bundle.x_test / 16)
    assert rows(unit.x_test) != rows(unit.x_train[:360])


def test_mnist1d_generated_then_cached(tmp_path, monkeypatch):
    np.random.seed(123)
    random.seed(7)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    first = load_data(DataConfig(name="mnist1d", root=str(tmp_path), normalize="none"), seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before_np)  # global RNGs restored
    assert random.getstate() == before_py
    assert (first.n_train, first.n_test, first.input_shape) == (4000, 1000, (40,))
    cache = Path(os.environ["SGDLAB_CACHE"])  # the cache folder, never the data folder
    assert (cache / "mnist1d.npz").is_file() and not (tmp_path / "mnist1d.npz").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]

    def no_generation():
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(sources, "_make_mnist1d", no_generation)
    second = load_data(DataConfig(name="mnist1d", root=str(tmp_path), normalize="none"), seed=0)
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)


@pytest.mark.parametrize("name", ["gaussian-mixture", "teacher-student"])
def test_synthetic_deterministic_given_seed(name):
    def make(seed, **kw):
        return load_data(DataConfig(name=name, dim=5, n_classes=3, noise_std=0.1, **kw), seed)

    a, b, c = make(1), make(1), make(2)
    assert (a.n_train, a.n_test, a.input_shape) == (2000, 1000, (5,))
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
        assert not torch.equal(getattr(a, field), getattr(c, field))
    small = make(1, n_train=50, n_test=20)
    assert (small.n_train, small.n_test) == (50, 20)


def test_gaussian_mixture_structure():
    cfg = DataConfig(name="gaussian-mixture", dim=50, n_classes=4, separation=6.0,
                     n_train=4000, normalize="none")
    bundle = load_data(cfg, seed=0)
    assert torch.bincount(bundle.y_train).tolist() == [1000] * 4
    means = torch.stack([bundle.x_train[bundle.y_train == c].mean(0) for c in range(4)])
    resid = bundle.x_train - means[bundle.y_train]
    assert abs(float(resid.var()) - 1.0) < 0.05  # unit isotropic noise
    norms = means.norm(dim=1)
    assert torch.all((norms > 4.0) & (norms < 8.0))  # |mu| ~ separation


def test_teacher_student_regression():
    cfg = DataConfig(name="teacher-student", dim=8, n_classes=3, teacher_width=16,
                     normalize="none", n_train=300)
    bundle = load_data(cfg, seed=4, dtype=torch.float64)
    assert bundle.task == "regression" and bundle.n_classes == 3
    assert bundle.y_train.shape == (300, 3) and bundle.y_train.dtype == torch.float64
    assert torch.equal(bundle.y_train, bundle.y_train_clean)
    assert 0 < float(bundle.y_train.std()) < 3  # tanh teacher with 1/sqrt(fan-in) weights
    noisy = load_data(DataConfig(**{**cfg.__dict__, "noise_std": 0.5}), seed=4,
                      dtype=torch.float64)
    assert torch.equal(noisy.x_train, bundle.x_train)
    assert abs(float((noisy.y_train - bundle.y_train).std()) - 0.5) < 0.05
    with pytest.raises(ConfigError, match="data.label_noise"):
        load_data(DataConfig(name="teacher-student", label_noise=0.1), seed=0)


def write_split(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    return path


@pytest.mark.parametrize("name, shape", [("fashion-mnist", (28, 28)), ("digits", (8, 8)),
                                         ("mnist1d", (40,))])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_rejected_naming_the_file(tmp_path, name, shape, bad):
    x = np.random.default_rng(0).random((20, *shape)).astype(np.float32)
    x[3].flat[5] = bad
    path = write_split(tmp_path / "bad.npz", x, np.arange(20) % 10)
    with pytest.raises(DataError, match=rf"^{path}: inputs contain non-finite values"):
        load_data(DataConfig(name=name, file=str(path), normalize="none"), seed=0)


def test_float_labels_must_be_integral(tmp_path):
    x = np.random.default_rng(0).random((20, 28, 28)).astype(np.float32)
    y = (np.arange(20) % 10).astype(np.float64)
    good = write_split(tmp_path / "good.npz", x, y)
    bundle = load_data(DataConfig(name="fashion-mnist", file=str(good)), seed=0)
    assert bundle.y_train.dtype == torch.int64
    assert sorted(bundle.y_train.tolist()) == sorted(y.astype(int).tolist())
    for bad_label in (1.5, np.nan):
        y[7] = bad_label
        bad = write_split(tmp_path / "bad.npz", x, y)
        with pytest.raises(DataError, match=rf"^{bad}: labels must be integers, got {bad_label}"):
            load_data(DataConfig(name="fashion-mnist", file=str(bad)), seed=0)
