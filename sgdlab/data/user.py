"""Datasets of one's own: ``data.name = "package.module:function"``.

The function is called as ``function(cfg, seed, **cfg.options)`` (``cfg`` the run's
:class:`~sgdlab.config.DataConfig`, ``seed`` the run's seed: draw any randomness from it)
and returns the whole dataset, as a dict with ``x_train, y_train, x_test, y_test`` (and
optionally ``n_classes``) or a tuple of those four, each a numpy array or a torch tensor:

- inputs ``(N, *input_shape)``, numbers; they reach the model in the run's float dtype
  (integers, such as token ids, exactly: ``x.long()`` in the model gets them back);
- targets: integer class labels ``(N,)`` (a classification task, ``n_classes`` defaults to
  the largest label + 1) or float targets ``(N, d)`` (a regression task, for ``mse``).

sgdlab then draws the seeded subsets (``data.n_train``, ``data.n_test``; 0 = all), label
noise and input corruption, normalization (``data.normalize``, per input entry) and
flattening, as for the built-in datasets. Every problem with what comes back is a
ConfigError naming ``data.name``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sgdlab.config import DataConfig
from sgdlab.data.sources import RawData, _check_labels, _inputs, _labels
from sgdlab.errors import ConfigError, DataError, first_line
from sgdlab.imports import check_signature, resolve

KEYS = ("x_train", "y_train", "x_test", "y_test")


def check_loader(cfg: DataConfig) -> Callable:
    """The loader ``cfg.name`` names, its options checked against its signature."""
    fn = resolve("data.name", cfg.name)
    check_signature("data.name", fn, 2, cfg.options, "data.options")
    return fn


def load_user(cfg: DataConfig, seed: int) -> RawData:
    """Call the loader and check what it returned."""
    fn = check_loader(cfg)
    where = f"data.name: {cfg.name!r}"
    try:
        out = fn(cfg, seed, **cfg.options)
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        first = first_line(exc)
        raise ConfigError(f"{where} raised {type(exc).__name__}: {first}") from None
    arrays, n_classes = _unpack(out, where)
    x_train, y_train, x_test, y_test = (_array(arrays[k], k, where) for k in KEYS)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim < 2 and x.size:
            raise ConfigError(f"{where}: x_{split} of shape {x.shape}; expected "
                              "(examples, *input_shape)")
        if len(x) != len(y):
            raise ConfigError(f"{where}: {len(x)} inputs x_{split} but {len(y)} targets y_{split}")
    if len(x_train) == 0:
        raise ConfigError(f"{where} returned no training examples")
    if x_test.size and x_test.shape[1:] != x_train.shape[1:]:
        raise ConfigError(f"{where}: x_test examples of shape {x_test.shape[1:]}, x_train "
                          f"examples of shape {x_train.shape[1:]}")
    try:
        x_train, x_test = _inputs(x_train, where), _inputs(x_test, where)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    if np.issubdtype(y_train.dtype, np.floating) and y_train.ndim == 2:
        if y_test.ndim != 2 or (y_test.size and y_test.shape[1] != y_train.shape[1]):
            raise ConfigError(f"{where}: y_test of shape {y_test.shape}, y_train of shape "
                              f"{y_train.shape}")
        return RawData(cfg.name, "regression", x_train, y_train.astype(np.float64), x_test,
                       y_test.astype(np.float64), int(y_train.shape[1]), None, cfg.name)
    try:
        y_train, y_test = _labels(y_train, where), _labels(y_test, where)
    except DataError as exc:
        raise ConfigError(f"{exc} (or float targets of shape (N, d) for regression)") from None
    for y, split in ((y_train, "train"), (y_test, "test")):
        if y.ndim != 1:
            raise ConfigError(f"{where}: y_{split} of shape {y.shape}; expected class labels "
                              "(N,) or float targets (N, d)")
    largest = int(max(y_train.max(), y_test.max() if y_test.size else 0))
    if n_classes is None:
        n_classes = largest + 1
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 1:
        raise ConfigError(f"{where}: n_classes must be a positive integer, got {n_classes!r}")
    raw = RawData(cfg.name, "classification", x_train, y_train, x_test, y_test,
                  int(n_classes), None, cfg.name)
    try:
        _check_labels(raw, where)
    except DataError as exc:
        raise ConfigError(f"{exc} (n_classes = {n_classes})") from None
    return raw


def _unpack(out: Any, where: str) -> tuple[dict[str, Any], Any]:
    expected = "a dict with x_train, y_train, x_test, y_test or a tuple of those four"
    if isinstance(out, dict):
        missing = [k for k in KEYS if k not in out]
        if missing:
            raise ConfigError(f"{where} returned a dict without {', '.join(missing)}; "
                              f"expected {expected}")
        return out, out.get("n_classes")
    if isinstance(out, tuple | list) and len(out) == 4:
        return dict(zip(KEYS, out)), None
    raise ConfigError(f"{where} returned {_describe(out)}; expected {expected}")


def _describe(obj: Any) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)}"
    return "None" if obj is None else f"a {type(obj).__name__}"


def _array(value: Any, key: str, where: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {key} is not an array ({exc})") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ConfigError(f"{where}: {key} must hold numbers, got dtype {array.dtype}")
    return array.astype(np.int64) if array.dtype == bool else array
