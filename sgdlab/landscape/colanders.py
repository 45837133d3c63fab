"""The "tower of colanders" (Bombari 2020): low loss is reachable only in sharp regions.

Over many points θ of many trajectories (several learning rates, batch sizes, seeds) with
loss L(θ) and top Hessian eigenvalue λ_max(θ), the envelope

    m(ℓ) = min { λ_max(θ) : L(θ) ≤ ℓ }

is the least sharpness at which the loss ℓ is reached. The claim is that m grows as ℓ
falls: a constraint between the loss and λ_max rather than a property of one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from torch import nn

from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.layout import Data, Layout, LossFn, model_at


@dataclass
class ColanderEnvelope:
    """m(ℓ) at each level (NaN where no point has L ≤ ℓ), the number of points below
    each level and the index of the point attaining the minimum (−1 where none)."""

    levels: np.ndarray
    min_sharpness: np.ndarray
    counts: np.ndarray
    argmin: np.ndarray

    def trend(self) -> float:
        """Spearman rank correlation between the level and m(ℓ) over the levels that
        have points: negative when m grows as the level falls."""
        ok = ~np.isnan(self.min_sharpness)
        if ok.sum() < 3 or np.ptp(self.min_sharpness[ok]) == 0:
            return float("nan")
        return float(stats.spearmanr(self.levels[ok], self.min_sharpness[ok]).statistic)


def colander_envelope(loss: Sequence[float], sharpness: Sequence[float],
                      levels: Sequence[float] | None = None,
                      num_levels: int = 20) -> ColanderEnvelope:
    """m(ℓ) over ``levels`` (default: ``num_levels`` log-spaced levels between the least
    and largest loss). NaN entries of either input are ignored."""
    loss_a = np.asarray(loss, dtype=np.float64).reshape(-1)
    lam = np.asarray(sharpness, dtype=np.float64).reshape(-1)
    if loss_a.shape != lam.shape or loss_a.size == 0:
        raise LandscapeError("loss and sharpness: need two non-empty arrays of the same length")
    ok = ~(np.isnan(loss_a) | np.isnan(lam))
    if levels is None:
        lo, hi = loss_a[ok].min(), loss_a[ok].max()
        levels = (np.geomspace(lo, hi, int(num_levels)) if lo > 0
                  else np.linspace(lo, hi, int(num_levels)))
    levels_a = np.sort(np.asarray(levels, dtype=np.float64).reshape(-1))
    mins = np.full(len(levels_a), np.nan)
    counts = np.zeros(len(levels_a), dtype=np.int64)
    arg = np.full(len(levels_a), -1, dtype=np.int64)
    idx = np.nonzero(ok)[0]
    for k, level in enumerate(levels_a):
        below = idx[loss_a[idx] <= level]
        counts[k] = len(below)
        if len(below):
            j = below[np.argmin(lam[below])]
            mins[k], arg[k] = lam[j], j
    return ColanderEnvelope(levels_a, mins, counts, arg)


def sharpness_at(model: nn.Module, loss_fn: LossFn, data: Data, points, *,
                 layout: Layout | None = None, k: int = 1, **eig_options) -> np.ndarray:
    """λ_1..λ_k of the Hessian at each point (T × k), by
    :func:`sgdlab.curvature.hessian_eigs` on a copy of the model loaded with the point."""
    from sgdlab.curvature import hessian_eigs

    layout = layout or Layout.of(model)
    block = layout.block(points, "points")
    out = np.zeros((block.shape[0], int(k)))
    for i, row in enumerate(block):
        res = hessian_eigs(model_at(model, row, layout), loss_fn, data, k=int(k), **eig_options)
        out[i] = res.values.cpu().numpy()[: int(k)]
    return out


@dataclass
class ColanderPoints:
    """Loss and λ_max at every point of several trajectories, with where each came from."""

    loss: np.ndarray
    sharpness: np.ndarray
    trajectory: np.ndarray
    step: np.ndarray

    def envelope(self, levels: Sequence[float] | None = None,
                 num_levels: int = 20) -> ColanderEnvelope:
        return colander_envelope(self.loss, self.sharpness, levels, num_levels)


def colander_points(model: nn.Module, loss_fn: LossFn, data: Data, trajectories,
                    **eig_options) -> ColanderPoints:
    """Loss (batched evaluation, eval mode) and λ_max (:func:`sharpness_at`) at every point
    of ``trajectories`` (a list of point blocks, one per run)."""
    from sgdlab.landscape.evaluate import PointEvaluator

    ev = PointEvaluator(model, loss_fn, data)
    losses, lams, traj, steps = [], [], [], []
    for i, points in enumerate(trajectories):
        block = ev.layout.block(points, f"trajectories[{i}]")
        losses.append(ev(block)[0])
        lams.append(sharpness_at(model, loss_fn, data, block, layout=ev.layout, k=1,
                                 **eig_options)[:, 0])
        traj.append(np.full(len(block), i))
        steps.append(np.arange(len(block)))
    return ColanderPoints(np.concatenate(losses), np.concatenate(lams), np.concatenate(traj),
                          np.concatenate(steps))
