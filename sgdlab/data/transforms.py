"""Seeded subsets, label and input corruption with masks, and normalization (numpy, CPU).

Each random choice draws from its own stream ``sources.rng(seed, tag)``, so e.g. changing the
label-noise fraction does not move the subset, and the results are the same on every device.
"""

from __future__ import annotations

import numpy as np

from sgdlab.data.sources import rng
from sgdlab.errors import ConfigError

STD_FLOOR = 0.1  # per-feature std (or range) is clamped to >= STD_FLOOR * its mean over features
_CHUNK = 8192


def subset_indices(
    y: np.ndarray, n: int, seed: int, tag: str, stratified: bool, n_classes: int,
    field: str, what: str,
) -> np.ndarray:
    """``n`` indices (0 = all) in seeded random order; ``stratified``: per-class counts within
    one of ``n / n_classes`` (the remainder goes to randomly chosen classes)."""
    available = len(y)
    if n > available:
        raise ConfigError(f"{field}: {n} exceeds the {available} {what}")
    g = rng(seed, tag)
    perm = g.permutation(available)
    n = n or available
    if not stratified or n == available:
        return perm[:n]
    counts = np.bincount(y, minlength=n_classes)
    quota = np.full(n_classes, n // n_classes)
    extra = [c for c in g.permutation(n_classes) if counts[c] > quota[c]][: n - quota.sum()]
    quota[extra] += 1
    short = np.flatnonzero(counts < quota)
    if len(short) or quota.sum() < n:
        c = int(short[0]) if len(short) else int(np.argmin(counts))
        raise ConfigError(f"{field}: a stratified subset of {n} needs {quota[c]} examples of class "
                          f"{c}, the {what} have {counts[c]}")
    ys = y[perm]
    rank = np.empty(available, dtype=np.int64)  # rank within its class, in permutation order
    for c in range(n_classes):
        where = ys == c
        rank[where] = np.arange(int(where.sum()))
    return perm[rank < quota[ys]]


def exact_fraction(n: int, fraction: float, seed: int, tag: str) -> np.ndarray:
    """Boolean mask with exactly ``round(fraction * n)`` True entries at seeded random positions."""
    mask = np.zeros(n, dtype=bool)
    mask[rng(seed, tag).permutation(n)[: int(round(fraction * n))]] = True
    return mask


def label_noise(
    y: np.ndarray, fraction: float, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the labels of exactly ``round(fraction * n)`` examples by uniform random labels.

    The new label may coincide with the true one (probability ``1 / n_classes``), as in Zhang et
    al.; the returned mask marks every chosen example, changed or not.
    """
    mask = exact_fraction(len(y), fraction, seed, "label-noise")
    y = y.copy()
    y[mask] = rng(seed, "label-noise-values").integers(0, n_classes, int(mask.sum()))
    return y, mask


def corrupt_inputs(
    x: np.ndarray, kind: str, fraction: float, seed: int, channels: int, inplace: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt exactly ``round(fraction * n)`` inputs of ``x`` (float, (n, *shape)); returns
    ``(x, mask)``, ``x`` a copy unless ``inplace``.

    - ``shuffled-pixels``: one fixed permutation of pixel positions for all chosen inputs;
    - ``random-pixels``: an independent permutation per input (each keeps its pixel multiset);
    - ``gaussian``: i.i.d. Gaussian values with the global mean and variance of the (clean)
      training inputs, as in Zhang et al. (2017); no clipping.

    Images (``channels`` > 0, shape ``(C, H, W)``) permute spatial positions and keep the
    channels of a pixel together; vectors permute features.
    """
    mask = exact_fraction(len(x), fraction, seed, "input-corruption")
    if kind == "none" or not mask.any():
        return x, np.zeros(len(x), dtype=bool) if kind == "none" else mask
    if not (inplace and x.flags.c_contiguous):
        x = x.copy()
    chosen = np.flatnonzero(mask)
    n = len(x)
    pix = x.reshape(n, channels, -1) if channels else x.reshape(n, 1, -1)  # (n, C, positions)
    g = rng(seed, f"input-{kind}")
    if kind not in ("shuffled-pixels", "random-pixels", "gaussian"):
        raise ConfigError(f"data.input_corruption: unknown corruption {kind!r}")
    fixed = g.permutation(pix.shape[2]) if kind == "shuffled-pixels" else None
    if kind == "gaussian":  # global mean and std from the per-feature moments
        mean, std = moments(x)
        global_mean = float(mean.mean())
        global_std = float(np.sqrt((std**2 + (mean - global_mean) ** 2).mean()))
    step = _CHUNK // 4  # bounds the temporaries (CIFAR-10: 2048 x 3072)
    for start in range(0, len(chosen), step):
        rows = chosen[start : start + step]
        if kind == "shuffled-pixels":
            pix[rows] = pix[rows][:, :, fixed]
        elif kind == "random-pixels":
            positions = np.tile(np.arange(pix.shape[2], dtype=np.int32), (len(rows), 1))
            order = g.permuted(positions, axis=1)
            pix[rows] = np.take_along_axis(pix[rows], order[:, None, :], axis=2)
        else:
            x[rows] = g.normal(global_mean, global_std, (len(rows), *x.shape[1:]))
    return x, mask


def normalize(
    x_train: np.ndarray, x_test: np.ndarray, mode: str, pixel_max: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalize in place with ``x_train``'s statistics; returns ``(x_train, x_test, input_scale)``.

    Images arrive in [0, 1] units (stored value / ``pixel_max``): none = stored values
    (scale ``pixel_max``), unit = [0, 1], center = minus the per-pixel mean, standardize =
    per-pixel ``(x - mean) / std``. Vector data (``pixel_max`` None) arrive as stored:
    none = as stored, unit = per-feature min-max to [0, 1], center, standardize per feature.
    ``input_scale`` = d(normalized) / d(input in [0, 1] units, or stored units for vectors).
    Spreads (std, range) are clamped to at least ``STD_FLOOR`` times their mean over features.
    """
    shape = x_train.shape[1:]
    shift, scale = np.zeros(shape), np.ones(shape)
    if mode == "none":
        scale = scale * (pixel_max or 1.0)
    elif mode == "unit" and pixel_max is None:
        lo, hi = x_train.min(axis=0).astype(np.float64), x_train.max(axis=0).astype(np.float64)
        shift, scale = lo, 1.0 / _floor(hi - lo)
    elif mode in ("center", "standardize"):
        shift, std = moments(x_train)
        if mode == "standardize":
            scale = 1.0 / _floor(std)
    elif mode != "unit":
        raise ConfigError(f"data.normalize: unknown normalization {mode!r}")
    shift_, scale_ = shift.astype(x_train.dtype), scale.astype(x_train.dtype)
    for x in (x_train, x_test):  # chunked, in place, in the working dtype
        for start in range(0, len(x), _CHUNK):
            block = x[start : start + _CHUNK]
            block -= shift_
            block *= scale_
    return x_train, x_test, scale


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and (population) std over the first axis, accumulated in float64."""
    n = max(len(x), 1)
    total = np.zeros(x.shape[1:])
    for start in range(0, len(x), _CHUNK):
        total += x[start : start + _CHUNK].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(x.shape[1:])
    for start in range(0, len(x), _CHUNK):
        sq += ((x[start : start + _CHUNK] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(sq / n)


def _floor(spread: np.ndarray) -> np.ndarray:
    level = float(spread.mean()) if spread.size else 0.0
    return np.maximum(spread, STD_FLOOR * level if level > 0 else 1.0)
