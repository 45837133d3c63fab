"""A trajectory's principal directions and the loss on their plane (Li et al., NeurIPS 2018).

For points θ_0..θ_n of a run (its thinned parameter history), the differences from the
final point form M = [θ_0 − θ_n; …; θ_{n−1} − θ_n] (n × P). Its principal directions are
the top right singular vectors of M with each column's mean removed (PCA of the rows);
``explained`` is each direction's share of the total variance. The trajectory is drawn as
the coordinates (θ_t − θ_n) · u_i of every point on the orthonormal directions u_1, u_2,
over the loss on the plane θ_n + a u_1 + b u_2 (:func:`trajectory_plane`). Random
directions would miss the trajectory: it lives in a very low-dimensional subspace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sgdlab.landscape.directions import Directions
from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.layout import Data, Layout, LossFn
from sgdlab.landscape.slices import Slice, loss_slice


@dataclass
class TrajectoryPCA:
    """Principal directions (k, P) of a trajectory around ``center`` (its final point)."""

    center: Tensor
    directions: Directions
    explained: np.ndarray
    coordinates: np.ndarray  # (T, k): (θ_t − center) · u_i for every point, the last one 0

    @property
    def plane_extent(self) -> list[tuple[float, float]]:
        """The coordinates' range on each direction."""
        return [(float(c.min()), float(c.max())) for c in self.coordinates.T]


def trajectory_pca(points, layout: Layout, k: int = 2, *,
                   center: Tensor | None = None) -> TrajectoryPCA:
    """Top-k principal directions of ``points`` (T × P tensor or sequence of points; T ≥ 2)
    around ``center`` (default: the last point), and the points' coordinates on them."""
    block = layout.block(points, "trajectory")
    if block.shape[0] < 2:
        raise LandscapeError("trajectory: needs at least 2 points")
    c = block[-1] if center is None else layout.vector(center, "center", dtype=block.dtype,
                                                       device=block.device)
    diffs = (block if center is not None else block[:-1]) - c
    if not 1 <= int(k) <= min(diffs.shape):
        raise LandscapeError(f"k: must be between 1 and {min(diffs.shape)}, got {k}")
    m = diffs.to(torch.float64)
    _, s, vh = torch.linalg.svd(m - m.mean(0, keepdim=True), full_matrices=False)
    dirs = vh[: int(k)]
    # a sign convention: the first point has a non-negative coordinate on each direction
    first = (block[0].to(torch.float64) - c.to(torch.float64)) @ dirs.T
    dirs = dirs * torch.where(first < 0, -1.0, 1.0).to(dirs)[:, None]
    var = s**2
    explained = (var[: int(k)] / var.sum()).cpu().numpy() if var.sum() > 0 else np.zeros(int(k))
    coords = ((block.to(torch.float64) - c.to(torch.float64)) @ dirs.T).cpu().numpy()
    recipes = [{"kind": "pca", "index": i, "explained": float(explained[i])} for i in range(int(k))]
    return TrajectoryPCA(c.detach(), Directions(dirs.to(block.dtype), layout, recipes),
                         explained, coords)


def trajectory_plane(model: nn.Module, loss_fn: LossFn, data: Data, pca: TrajectoryPCA, *,
                     num: int = 21, margin: float = 0.2, **options) -> Slice:
    """The loss on the plane of the first two principal directions, on a num × num grid
    covering the trajectory's coordinates with ``margin`` (a fraction of each range) on
    each side; ``options`` go to :func:`~sgdlab.landscape.slices.loss_slice`."""
    if len(pca.directions) < 2:
        raise LandscapeError("trajectory plane: needs two principal directions")
    axes = []
    for lo, hi in pca.plane_extent[:2]:
        pad = margin * max(hi - lo, 1e-12)
        axes.append(np.linspace(lo - pad, hi + pad, int(num)))
    return loss_slice(model, loss_fn, data, axes, directions=pca.directions[:2],
                      center=pca.center, **options)
