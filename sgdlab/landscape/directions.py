"""Directions in parameter space, stored with the recipe that made them.

A :class:`Directions` holds k vectors (k, P) in a :class:`~sgdlab.landscape.layout.Layout`
and one JSON-able recipe per vector, so a figure can be redrawn from the stored vectors and
a random direction can be drawn again from its seed (on another center, to compare two
runs on the same random draw).

Filter normalization (Li et al., NeurIPS 2018, "Visualizing the Loss Landscape of Neural
Nets"): draw d ~ N(0, I) and rescale each filter of d to the norm of the matching filter
of the weights θ,

    d_{i,j} ← d_{i,j} · ‖θ_{i,j}‖ / ‖d_{i,j}‖,

where the filters of a parameter with ≥ 2 dimensions are its slices along the first
dimension (an output channel of a convolution, a row — one output unit — of a linear
layer). Parameters with ≤ 1 dimension (biases, BatchNorm scales and shifts) get a zero
direction by default, as the paper's plots do (``--xignore biasbn`` in its code);
``bias="weights"`` sets them to θ itself, the code's other option. A network whose ReLU
layers are rescaled (θ_{i,j} → c θ_{i,j}, the next layer by 1/c) or whose filters before a
BatchNorm are rescaled computes the same function, and its filter-normalized slice is the
same: the normalization removes that scale from the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.layout import Data, Layout, LossFn, Point, model_at

NORMALIZATIONS = ("filter", "layer", "unit", "none")
BIAS_RULES = ("zero", "weights")


@dataclass
class Directions:
    """k directions (k, P) with a recipe (a JSON-able dict) for each."""

    vectors: Tensor
    layout: Layout
    recipes: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.layout.dim:
            raise LandscapeError(f"directions: expected shape (k, {self.layout.dim}), "
                                 f"got {tuple(self.vectors.shape)}")
        if not self.recipes:
            self.recipes = [{"kind": "given"} for _ in range(len(self.vectors))]
        if len(self.recipes) != len(self.vectors):
            raise LandscapeError("directions: one recipe per vector")

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def __getitem__(self, i) -> Directions:
        idx = [i] if isinstance(i, int) else list(range(len(self)))[i]
        return Directions(self.vectors[idx], self.layout, [self.recipes[j] for j in idx])

    def concat(self, other: Directions) -> Directions:
        self.layout.check_compatible(other.layout, "directions")
        return Directions(torch.cat([self.vectors, other.vectors.to(self.vectors)]),
                          self.layout, self.recipes + other.recipes)

    def renormalized(self, center: Tensor) -> Directions:
        """The same random draws normalized at another ``center`` (random recipes only)."""
        out = []
        for rec in self.recipes:
            if rec.get("kind") != "random":
                raise LandscapeError(
                    f"directions: a {rec.get('kind')!r} direction has no seed to redraw")
            out.append(random_directions(center, self.layout, 1, seed=rec["seed"],
                                         normalization=rec["normalization"], bias=rec["bias"],
                                         start=rec["index"]))
        res = out[0]
        for d in out[1:]:
            res = res.concat(d)
        return res


def _gaussian(layout: Layout, seed: int, index: int) -> list[Tensor]:
    """N(0, 1) entries for every parameter of direction ``index`` of ``seed``: drawn in
    float64 on the CPU from ``torch.Generator().manual_seed(seed)`` after skipping
    ``index`` earlier directions, so draws are the same on every device."""
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(index):
        torch.randn(layout.dim, generator=gen, dtype=torch.float64)
    flat = torch.randn(layout.dim, generator=gen, dtype=torch.float64)
    return list(layout.tensors(flat).values())


def normalize(direction: Tensor, center: Tensor, layout: Layout, normalization: str = "filter",
              bias: str = "zero") -> Tensor:
    """Rescale a (P,) ``direction`` at ``center``: ``"filter"`` (each filter to the norm of
    the weights' filter), ``"layer"`` (each parameter tensor to the norm of the weights'
    tensor), ``"unit"`` (the whole vector to norm 1) or ``"none"``. ``bias`` decides the
    ≤ 1-D parameters under "filter" and "layer": ``"zero"`` or ``"weights"`` (d = θ)."""
    if normalization not in NORMALIZATIONS:
        raise LandscapeError(
            f"normalization: must be one of {NORMALIZATIONS}, got {normalization!r}")
    if bias not in BIAS_RULES:
        raise LandscapeError(f"bias: must be one of {BIAS_RULES}, got {bias!r}")
    d = layout.vector(direction, "direction")
    theta = layout.vector(center, "center", dtype=d.dtype, device=d.device)
    if normalization == "none":
        return d.clone()
    if normalization == "unit":
        return d / d.norm()
    parts = []
    for dp, tp in zip(layout.tensors(d).values(), layout.tensors(theta).values()):
        if dp.ndim <= 1:
            parts.append(torch.zeros_like(dp) if bias == "zero" else tp.clone())
            continue
        if normalization == "layer":
            parts.append(dp * _ratio(tp.norm(), dp.norm()))
            continue
        dims = tuple(range(1, dp.ndim))
        scale = _ratio(torch.linalg.vector_norm(tp, dim=dims, keepdim=True),
                       torch.linalg.vector_norm(dp, dim=dims, keepdim=True))
        parts.append(dp * scale)
    return torch.cat([p.reshape(-1) for p in parts])


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, 0 where den is 0 (a zero filter stays zero)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.zeros_like(den))


def random_directions(center: Point, layout: Layout, k: int = 2, *, seed: int = 0,
                      normalization: str = "filter", bias: str = "zero",
                      start: int = 0) -> Directions:
    """k Gaussian directions (draws ``start`` .. ``start + k − 1`` of ``seed``), normalized
    at ``center`` (filter normalization by default); dtype and device of the center."""
    if int(k) < 1:
        raise LandscapeError(f"k: must be >= 1, got {k}")
    theta = layout.vector(center, "center")
    vecs, recipes = [], []
    for i in range(int(start), int(start) + int(k)):
        raw = torch.cat([t.reshape(-1) for t in _gaussian(layout, seed, i)])
        vecs.append(normalize(raw, theta.to(torch.float64).cpu(), layout, normalization, bias))
        recipes.append({"kind": "random", "seed": int(seed), "index": i,
                        "normalization": normalization, "bias": bias})
    return Directions(torch.stack(vecs).to(dtype=theta.dtype, device=theta.device), layout, recipes)


def hessian_directions(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 2, *,
                       center: Point | None = None, layout: Layout | None = None,
                       **eig_options) -> Directions:
    """The top-k Hessian eigenvectors at ``center`` (default: the model's parameters) by
    :func:`sgdlab.curvature.hessian_eigs` (unit vectors; ``eig_options`` go to it).
    Recipes record the eigenvalue and residual of each."""
    from sgdlab.curvature import hessian_eigs

    layout = layout or Layout.of(model)
    if layout != Layout.of(model):
        raise LandscapeError("hessian directions: only for the model's trainable parameters")
    if center is not None:
        model = model_at(model, layout.vector(center, "center"), layout)
    res = hessian_eigs(model, loss_fn, data, k=int(k), **eig_options)
    recipes = [{"kind": "hessian", "index": i, "eigenvalue": float(v), "residual": float(r)}
               for i, (v, r) in enumerate(zip(res.values.tolist(), res.residuals.tolist()))]
    return Directions(res.vectors.detach(), layout, recipes)


def step_direction(previous: Point, current: Point, layout: Layout, *,
                   normalization: str = "none") -> Directions:
    """The last step θ_t − θ_{t−1} as a direction (coordinate 1 = one step), or rescaled
    (``normalization`` as in :func:`normalize`, at the current point)."""
    a = layout.vector(previous, "previous")
    b = layout.vector(current, "current", dtype=a.dtype, device=a.device)
    d = normalize(b - a, b, layout, normalization) if normalization != "none" else b - a
    return Directions(d[None], layout, [{"kind": "step", "normalization": normalization}])


def given_directions(vectors: Tensor | Sequence[Point], layout: Layout, *,
                     names: Sequence[str] | None = None) -> Directions:
    """Directions given by the caller: an (k, P) tensor or a sequence of points."""
    block = layout.block(vectors, "directions")
    labels = list(names) if names is not None else [None] * len(block)
    return Directions(block, layout, [{"kind": "given", "name": n} for n in labels])
