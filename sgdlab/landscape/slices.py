"""Loss and accuracy on lines and planes through a point.

A slice at center θ* along directions d_1..d_k evaluates

    L(θ* + Σ_i a_i d_i)

on a grid of coordinates (a_1, ..., a_k): a 1-D line (k = 1) or a 2-D plane (k = 2,
``loss[i, j]`` at ``(axes[0][i], axes[1][j])``), all points in one batched pass
(:class:`~sgdlab.landscape.evaluate.PointEvaluator`). The result keeps the center, the
directions with their recipes and the grid, so the figure can be redrawn, compared with a
second run on the same directions (``directions=first.directions`` for the same vectors,
``first.directions.renormalized(center2)`` for the same random draw normalized at the
second run) and saved (:meth:`Slice.save`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sgdlab.landscape.directions import (
    Directions,
    given_directions,
    hessian_directions,
    random_directions,
)
from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.evaluate import PointEvaluator
from sgdlab.landscape.layout import Data, Layout, LossFn, Point, fixed_subset
from sgdlab.landscape.storage import load_npz, pack, save_npz, unpack


@dataclass
class Slice:
    """Values of a slice: ``loss``/``accuracy`` have one axis per direction."""

    center: Tensor
    directions: Directions
    axes: list[np.ndarray]
    loss: np.ndarray
    accuracy: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def coordinates(self) -> np.ndarray:
        """(m, k) grid coordinates in the order of ``loss.reshape(-1)``."""
        return grid_coordinates(self.axes)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Values, center, directions and axes with the metadata (layout, recipes, settings)
        as one dict of arrays (:func:`~sgdlab.landscape.storage.pack`)."""
        arrays = {"center": self.center, "directions": self.directions.vectors,
                  "loss": self.loss, "accuracy": self.accuracy}
        arrays.update({f"axis_{i}": a for i, a in enumerate(self.axes)})
        meta = {"kind": "slice", "layout": self.directions.layout.to_json(),
                "recipes": self.directions.recipes, "meta": self.meta}
        return pack(arrays, meta)

    @classmethod
    def from_arrays(cls, payload: dict, where="arrays") -> Slice:
        arrays, meta = unpack(payload, where)
        if meta.get("kind") != "slice":
            raise LandscapeError(f"{where}: holds a {meta.get('kind')!r}, not a slice")
        layout = Layout.from_json(meta["layout"])
        dirs = Directions(torch.from_numpy(arrays["directions"]), layout, meta["recipes"])
        axes = [arrays[f"axis_{i}"] for i in range(len(dirs))]
        return cls(torch.from_numpy(arrays["center"]), dirs, axes, arrays["loss"],
                   arrays["accuracy"], meta["meta"])

    def save(self, path) -> None:
        save_npz(path, *unpack(self.to_arrays()))

    @classmethod
    def load(cls, path) -> Slice:
        return cls.from_arrays(pack(*load_npz(path)), path)


def grid_coordinates(axes: Sequence[np.ndarray]) -> np.ndarray:
    """All grid points (m, k), the last axis varying fastest ("ij" indexing)."""
    mesh = np.meshgrid(*[np.asarray(a, dtype=np.float64) for a in axes], indexing="ij")
    return np.stack([g.reshape(-1) for g in mesh], axis=1)


def points_along(center: Tensor, directions: Tensor, coordinates) -> Tensor:
    """θ* + C D: the (m, P) points at ``coordinates`` (m, k) along ``directions`` (k, P)."""
    coords = torch.as_tensor(np.asarray(coordinates, dtype=np.float64))
    if coords.ndim != 2 or coords.shape[1] != directions.shape[0]:
        raise LandscapeError(
            f"coordinates: expected shape (m, {directions.shape[0]}), got {tuple(coords.shape)}"
        )
    coords = coords.to(dtype=directions.dtype, device=directions.device)
    return center[None, :] + coords @ directions


def make_directions(model: nn.Module, loss_fn: LossFn, data, directions, k: int,
                    center: Tensor, layout: Layout, *, seed: int = 0,
                    normalization: str = "filter", bias: str = "zero",
                    hessian_options: dict | None = None) -> Directions:
    """Directions from a spec: "random" (filter-normalized Gaussian draws of ``seed``),
    "hessian" (top-k eigenvectors at the center), a :class:`Directions`, or vectors."""
    if isinstance(directions, Directions):
        layout.check_compatible(directions.layout, "directions")
        dirs = directions
    elif isinstance(directions, str):
        if directions == "random":
            dirs = random_directions(center, layout, k, seed=seed, normalization=normalization,
                                     bias=bias)
        elif directions == "hessian":
            dirs = hessian_directions(model, loss_fn, data, k, center=center, layout=layout,
                                      **(hessian_options or {}))
        else:
            raise LandscapeError(f"directions: must be 'random', 'hessian', Directions or vectors, "
                                 f"got {directions!r}")
    else:
        dirs = given_directions(directions, layout)
    if len(dirs) != k:
        raise LandscapeError(f"directions: {len(dirs)} given for {k} axes")
    return dirs


def loss_slice(model: nn.Module, loss_fn: LossFn, data: Data, axes: Sequence, *,
               directions="random", center: Point | None = None, seed: int = 0,
               normalization: str = "filter", bias: str = "zero", subset: int | None = None,
               subset_seed: int = 0, hessian_options: dict | None = None,
               **eval_options) -> Slice:
    """Loss and accuracy on the grid ``axes`` (one array of coordinates per direction)
    through ``center`` (default: the model's parameters).

    ``directions``: "random" (default: filter-normalized, see
    :mod:`sgdlab.landscape.directions`), "hessian", a :class:`Directions`, or (k, P)
    vectors. ``subset``: evaluate on a fixed seeded subset of that many examples (default:
    all the data). ``eval_options`` go to :class:`PointEvaluator` (``bn``, ``dtype``,
    ``memory_budget``, ...).
    """
    t0 = time.perf_counter()
    axes = [np.asarray(a, dtype=np.float64).reshape(-1) for a in axes]
    if not axes or any(len(a) == 0 for a in axes):
        raise LandscapeError("axes: need at least one non-empty array of coordinates")
    data = fixed_subset(data, subset, subset_seed) if subset is not None else data
    evaluator = PointEvaluator(model, loss_fn, data, **eval_options)
    layout = evaluator.layout
    theta = layout.vector(center if center is not None else model, "center",
                          dtype=evaluator.dtype, device=evaluator.device)
    dirs = make_directions(model, loss_fn, data, directions, len(axes), theta, layout,
                           seed=seed, normalization=normalization, bias=bias,
                           hessian_options=hessian_options)
    vecs = dirs.vectors.to(dtype=evaluator.dtype, device=evaluator.device)
    points = points_along(theta, vecs, grid_coordinates(axes))
    loss, acc = evaluator(points)
    shape = tuple(len(a) for a in axes)
    meta = {"bn": evaluator.bn, "num_examples": evaluator.num_examples, "subset": subset,
            "subset_seed": subset_seed if subset is not None else None,
            "dtype": str(evaluator.dtype).replace("torch.", ""), "num_points": len(points),
            "seconds": time.perf_counter() - t0}
    return Slice(theta.detach(), Directions(vecs, layout, dirs.recipes), axes,
                 loss.reshape(shape), acc.reshape(shape), meta)


def slice_1d(model, loss_fn, data, coords=None, **options) -> Slice:
    """A line: ``coords`` (default 51 points in [−1, 1]) along one direction."""
    coords = np.linspace(-1.0, 1.0, 51) if coords is None else coords
    return loss_slice(model, loss_fn, data, [coords], **options)


def slice_2d(model, loss_fn, data, xcoords=None, ycoords=None, **options) -> Slice:
    """A plane: ``loss[i, j]`` at (xcoords[i], ycoords[j]) (default 21 × 21 in [−1, 1]²)."""
    xcoords = np.linspace(-1.0, 1.0, 21) if xcoords is None else xcoords
    ycoords = xcoords if ycoords is None else ycoords
    return loss_slice(model, loss_fn, data, [xcoords, ycoords], **options)
