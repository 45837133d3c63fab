"""Training in a random subspace: the intrinsic dimension of an objective.

Li, Farkhoor, Liu & Yosinski ("Measuring the Intrinsic Dimension of Objective
Landscapes", ICLR 2018) train only z ∈ R^d in

    θ = θ_0 + P z,     z_0 = 0,

with θ_0 the network's (random) initialization and P ∈ R^{P×d} a fixed random projection
whose columns are normalized to unit length (steps in z are steps of the same length in
θ; random columns are nearly orthogonal). The gradient is ∂L/∂z = Pᵀ ∇L(θ): with d = P and
an orthogonal P, SGD on z is SGD on θ step for step (P Pᵀ = I; momentum too). Kinds of P:

* ``"dense"``: i.i.d. N(0, 1) entries, columns scaled to norm 1;
* ``"sparse"``: the very sparse random projection (Li, Hastie & Church 2006) Li et al.
  use for large networks: entries ±1 with probability 1/(2s) each, 0 otherwise,
  s = √P, columns scaled to norm 1 (stored as a sparse tensor);
* ``"orthogonal"``: orthonormal columns (QR of a Gaussian matrix), d ≤ P;
* ``"identity"``: P = I (d = P), plain training of θ with the same optimizer, the
  baseline "full" run.

d_int90 is the smallest d at which the subspace solution reaches 90% of the baseline's
performance (accuracy of the full-space run), on the grid of d tried
(:func:`intrinsic_dimension`). Fort & Jastrzębski (NeurIPS 2019) vary the radius ‖θ_0‖ of
the starting point: ``radius=r`` rescales θ_0 to norm r before training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.evaluate import PointEvaluator
from sgdlab.landscape.layout import Data, Layout, LossFn, Point
from sgdlab.landscape.training import PointLoss, batch_indices

PROJECTIONS = ("dense", "sparse", "orthogonal", "identity")
DENSE_LIMIT = 1 << 30  # bytes a dense P may take
OPTIMIZERS = ("sgd", "adam")


def projection_matrix(dim: int, d: int, kind: str = "dense", *, seed: int = 0,
                      dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """P (dim × d) of ``kind`` drawn from ``torch.Generator().manual_seed(seed)`` on the
    CPU in float64 (the same matrix on every device), then cast."""
    if kind not in PROJECTIONS:
        raise LandscapeError(f"projection: must be one of {PROJECTIONS}, got {kind!r}")
    if not 1 <= int(d) <= (dim if kind in ("orthogonal", "identity") else 10**12):
        raise LandscapeError(f"d: must be between 1 and {dim} for a {kind} projection, got {d}")
    d = int(d)
    gen = torch.Generator().manual_seed(int(seed))
    if kind == "identity":
        if d != dim:
            raise LandscapeError(f"d: an identity projection needs d = {dim}, got {d}")
        _check_dense(dim, d, dtype)
        return torch.eye(dim, dtype=dtype, device=device)
    if kind in ("dense", "orthogonal"):
        _check_dense(dim, d, dtype)
        g = torch.randn(dim, d, generator=gen, dtype=torch.float64)
        if kind == "orthogonal":
            g, r = torch.linalg.qr(g)
            g = g * torch.sign(torch.diagonal(r))  # a unique Q: Haar-distributed
        else:
            g = g / g.norm(dim=0, keepdim=True)
        return g.to(dtype=dtype, device=device)
    rows, cols = _bernoulli_positions(dim, d, 1.0 / math.sqrt(dim), gen)
    counts = torch.bincount(cols, minlength=d)
    empty = (counts == 0).nonzero().reshape(-1)  # never an empty column
    if len(empty):
        rows = torch.cat([rows, torch.randint(dim, (len(empty),), generator=gen)])
        cols = torch.cat([cols, empty])
        counts[empty] = 1
    signs = torch.randint(0, 2, (len(rows),), generator=gen, dtype=torch.float64) * 2 - 1
    vals = signs / counts[cols].to(torch.float64).sqrt()
    mat = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (dim, d),
                                  check_invariants=True).coalesce()
    return mat.to(dtype=dtype, device=device)


def _bernoulli_positions(dim: int, d: int, p: float, gen: torch.Generator
                         ) -> tuple[Tensor, Tensor]:
    """(rows, cols) of the nonzeros of a dim × d matrix whose entries are independently
    nonzero with probability p: per column, the gaps between successive nonzeros are
    Geometric(p), drawn as ⌊log U / log(1 − p)⌋ + 1 (O(p · dim) draws a column instead of
    dim), as many as needed to pass the last row."""
    if p >= 1:
        rows = torch.arange(dim).repeat(d)
        return rows, torch.arange(d).repeat_interleave(dim)
    mean = p * dim
    m = int(mean + 8 * math.sqrt(mean) + 16)  # gaps drawn per column at first
    log_q = math.log1p(-p)
    pos = torch.full((d, 1), -1, dtype=torch.int64)
    parts = []
    while True:
        u = torch.rand(d, m, generator=gen, dtype=torch.float64)
        gaps = (torch.log(u) / log_q).floor().to(torch.int64) + 1
        block = pos[:, -1:] + gaps.cumsum(1)
        parts.append(block)
        pos = block
        if bool((block[:, -1] >= dim).all()):
            break
    allpos = torch.cat(parts, 1)
    keep = allpos < dim
    cols = torch.arange(d)[:, None].expand_as(allpos)[keep]
    return allpos[keep], cols


def _check_dense(dim: int, d: int, dtype: torch.dtype) -> None:
    nbytes = dim * d * torch.empty((), dtype=dtype).element_size()
    if nbytes > DENSE_LIMIT:
        raise LandscapeError(f"projection: a dense {dim} × {d} matrix takes {nbytes >> 20} MB; "
                             "use projection='sparse'")


def project(P: Tensor | None, z: Tensor) -> Tensor:
    """P z for a dense or sparse P; z itself for P = None (the identity, never built)."""
    if P is None:
        return z
    if P.is_sparse:  # a gather and a scatter-add: ~5x faster than sparse.mm's backward
        rows, cols = P.indices()
        out = torch.zeros(P.shape[0], dtype=z.dtype, device=z.device)
        return out.index_add(0, rows, P.values() * z[cols])
    return P @ z


@dataclass
class SubspaceRun:
    """One training run in a d-dimensional random subspace."""

    d: int
    projection: str
    seed: int
    z: Tensor
    start_norm: float
    history: np.ndarray
    train_loss: float
    train_accuracy: float
    eval_loss: float = math.nan
    eval_accuracy: float = math.nan
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"d": self.d, "projection": self.projection, "seed": self.seed,
                "start_norm": self.start_norm, "train_loss": self.train_loss,
                "train_accuracy": self.train_accuracy, "eval_loss": self.eval_loss,
                "eval_accuracy": self.eval_accuracy, **self.meta}


def train_subspace(model: nn.Module, loss_fn: LossFn, data: Data, d: int, *,
                   projection: str = "dense", seed: int = 0, start: Point | None = None,
                   radius: float | None = None, steps: int = 1000, lr: float = 0.1,
                   momentum: float = 0.0, optimizer: str = "sgd",
                   batch_size: int | None = 128,
                   batch_seed: int = 0, eval_data: Data | None = None, bn: str = "eval",
                   dtype: torch.dtype | None = None, return_point: bool = False) -> SubspaceRun:
    """Train z (d entries) in θ = θ_0 + P z by SGD (see the module doc), or by Adam
    (``optimizer="adam"``, ``momentum`` unused), which Li et al.'s code uses by default.

    θ_0 is ``start`` (default: the model's parameters) rescaled to norm ``radius`` if
    given; P has ``projection`` kind and ``seed``; minibatches follow ``batch_seed``
    (:func:`~sgdlab.landscape.training.batch_indices`). The final point is evaluated on the
    training data (and ``eval_data``) in eval mode. ``return_point`` keeps θ in ``meta``.
    """
    if int(steps) < 0 or not lr > 0:
        raise LandscapeError(f"steps must be >= 0 and lr > 0, got steps={steps}, lr={lr}")
    t0 = time.perf_counter()
    f = PointLoss(model, loss_fn, data, dtype=dtype, bn=bn)
    theta0 = f.vector(start if start is not None else model, "start").clone()
    if radius is not None:
        if not radius > 0:
            raise LandscapeError(f"radius: must be > 0, got {radius}")
        theta0 = theta0 * (radius / theta0.norm())
    if projection == "identity" and int(d) != f.layout.dim:
        raise LandscapeError(f"d: an identity projection needs d = {f.layout.dim}, got {d}")
    P = None if projection == "identity" else projection_matrix(
        f.layout.dim, d, projection, seed=seed, dtype=f.dtype, device=f.device)
    z = torch.zeros(int(d), dtype=f.dtype, device=f.device, requires_grad=True)
    if optimizer not in OPTIMIZERS:
        raise LandscapeError(f"optimizer: must be one of {OPTIMIZERS}, got {optimizer!r}")
    opt = (torch.optim.SGD([z], lr=lr, momentum=momentum) if optimizer == "sgd"
           else torch.optim.Adam([z], lr=lr))
    history = []
    for idx in batch_indices(f.n, batch_size, int(steps), batch_seed):
        opt.zero_grad(set_to_none=True)
        loss = f(theta0 + project(P, z), idx)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    with torch.no_grad():
        theta = theta0 + project(P, z.detach())
    ev = PointEvaluator(model, loss_fn, data, dtype=f.dtype)
    (tl,), (ta,) = ev(theta[None])
    el = ea = math.nan
    if eval_data is not None:
        (el,), (ea,) = PointEvaluator(model, loss_fn, eval_data, dtype=f.dtype)(theta[None])
    meta = {"steps": int(steps), "lr": lr, "momentum": momentum, "optimizer": optimizer,
            "batch_size": batch_size,
            "batch_seed": batch_seed, "radius": radius, "seconds": time.perf_counter() - t0}
    if return_point:
        meta["point"] = theta
    return SubspaceRun(int(d), projection, int(seed), z.detach(), float(theta0.norm()),
                       np.asarray(history), float(tl), float(ta), float(el), float(ea), meta)


@dataclass
class IntrinsicDimension:
    """Accuracy against d, and d_int at ``fraction`` of the ``baseline`` accuracy."""

    dims: np.ndarray
    accuracy: np.ndarray
    baseline: float
    fraction: float
    d_int: int | None
    d_int_interpolated: float | None


def intrinsic_dimension(dims: Sequence[int], accuracy: Sequence[float], baseline: float,
                        fraction: float = 0.9) -> IntrinsicDimension:
    """d_int = the smallest d of the grid whose accuracy reaches ``fraction × baseline``
    (Li et al.'s d_int90 for fraction 0.9); None if none does. ``d_int_interpolated``
    places the crossing on the straight line between the grid point before it and d_int."""
    dims_a = np.asarray(dims, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    if dims_a.shape != acc.shape or dims_a.ndim != 1 or len(dims_a) == 0:
        raise LandscapeError("dims and accuracy: need two 1-D arrays of the same length")
    order = np.argsort(dims_a)
    dims_a, acc = dims_a[order], acc[order]
    target = fraction * baseline
    hit = np.nonzero(acc >= target)[0]
    if len(hit) == 0:
        return IntrinsicDimension(dims_a, acc, baseline, fraction, None, None)
    i = int(hit[0])
    interp = float(dims_a[i])
    if i > 0 and acc[i] > acc[i - 1]:
        interp = float(dims_a[i - 1] + (target - acc[i - 1]) / (acc[i] - acc[i - 1])
                       * (dims_a[i] - dims_a[i - 1]))
    return IntrinsicDimension(dims_a, acc, float(baseline), float(fraction), int(dims_a[i]), interp)


def subspace_sweep(model: nn.Module, loss_fn: LossFn, data: Data, dims: Sequence[int], *,
                   eval_data: Data | None = None, fraction: float = 0.9,
                   metric: str = "eval_accuracy", baseline: SubspaceRun | None = None,
                   **train_options) -> tuple[IntrinsicDimension, list[SubspaceRun], SubspaceRun]:
    """Accuracy against d: one :func:`train_subspace` run per d (same options, start and
    minibatches), the full-space baseline (``projection="identity"``, unless given) and
    d_int at ``fraction`` of it, on ``metric`` ("eval_accuracy" — needs ``eval_data`` —
    or "train_accuracy")."""
    if metric not in ("eval_accuracy", "train_accuracy"):
        raise LandscapeError(f"metric: must be 'eval_accuracy' or 'train_accuracy', got {metric!r}")
    if metric == "eval_accuracy" and eval_data is None:
        raise LandscapeError("eval_data: needed for metric='eval_accuracy'")
    runs = [train_subspace(model, loss_fn, data, d, eval_data=eval_data, **train_options)
            for d in dims]
    if baseline is None:
        full = dict(train_options, projection="identity")
        baseline = train_subspace(model, loss_fn, data, Layout.of(model).dim,
                                  eval_data=eval_data, **full)
    res = intrinsic_dimension([r.d for r in runs], [getattr(r, metric) for r in runs],
                              getattr(baseline, metric), fraction)
    return res, runs, baseline
