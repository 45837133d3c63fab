"""Trained low-loss curves between solutions, and a connector through several solutions.

Curves (Garipov et al., NeurIPS 2018; Draxler et al., ICML 2018): between fixed endpoints
w_A, w_B, a curve φ_C(t) with trainable bends C = (c_1..c_b) is fitted by minimizing the
loss averaged along it,

    ℓ(C) = E_{t ~ U[0, 1]} L(φ_C(t)),

by SGD: each step draws one t (``sampling="uniform"``, Garipov et al.) or sums the
Gauss–Legendre quadrature of the integral (``sampling="quadrature"``: q nodes on [0, 1]
for a Bézier curve, on each segment of a chain; exact for a quadratic L and enough
nodes), on a minibatch. Shapes: ``"bezier"``, φ(t) = Σ_k b_{k,b+1}(t) c_k with c_0 = w_A,
c_{b+1} = w_B (b = 1: the quadratic Bézier curve (1−t)² w_A + 2t(1−t) c_1 + t² w_B);
``"chain"``, the polygonal chain w_A → c_1 → … → c_b → w_B with nodes at t = k/(b+1)
(b = 1: Garipov's two-segment chain). Bends start on the straight line, at t = k/(b+1).

Connector: n ≥ 2 solutions w_1..w_n are joined through one trained hub h by the segments
w_i → h, so every pair is linked by the two-segment chain w_i → h → w_j; h minimizes

    ℓ(h) = (1/n) Σ_i E_{t ~ U[0, 1]} L((1 − t) w_i + t h),

which for n = 2 is the two-segment chain's objective. This is our reading of the low-loss
connectors through several solutions of Fort & Jastrzębski (NeurIPS 2019), who predicted
from their model of the landscape (high-dimensional wedges joined into one structure)
that many solutions share one low-loss region; the star through a common hub is the
simplest such object and is what the layer builds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.evaluate import PointEvaluator
from sgdlab.landscape.layout import Data, Layout, LossFn, Point
from sgdlab.landscape.paths import PathValues, evaluate_path, path_weights
from sgdlab.landscape.storage import load_npz, save_npz
from sgdlab.landscape.training import PointLoss, batch_indices, gauss_legendre

CURVE_KINDS = ("bezier", "chain")
SAMPLINGS = ("uniform", "quadrature")


@dataclass
class Curve:
    """A trained curve: ``nodes`` (b + 2, P) are w_A, the bends, w_B."""

    kind: str
    nodes: Tensor
    layout: Layout
    history: np.ndarray
    meta: dict = field(default_factory=dict)

    def points(self, ts) -> Tensor:
        w = path_weights(self.kind, self.nodes.shape[0], ts)
        return w.to(self.nodes) @ self.nodes

    def save(self, path) -> None:
        save_npz(path, {"nodes": self.nodes, "history": self.history},
                 {"kind": "curve", "curve_kind": self.kind, "layout": self.layout.to_json(),
                  "meta": self.meta})

    @classmethod
    def load(cls, path) -> Curve:
        arrays, meta = load_npz(path)
        if meta.get("kind") != "curve":
            raise LandscapeError(f"{path}: holds a {meta.get('kind')!r}, not a curve")
        return cls(meta["curve_kind"], torch.from_numpy(arrays["nodes"]),
                   Layout.from_json(meta["layout"]), arrays["history"], meta["meta"])


@dataclass
class Connector:
    """n solutions (n, P) joined through the trained ``hub`` (P,)."""

    solutions: Tensor
    hub: Tensor
    layout: Layout
    history: np.ndarray
    meta: dict = field(default_factory=dict)

    def pair_nodes(self, i: int, j: int) -> Tensor:
        """Nodes of the chain w_i → hub → w_j."""
        return torch.stack([self.solutions[i], self.hub, self.solutions[j]])

    def save(self, path) -> None:
        save_npz(path, {"solutions": self.solutions, "hub": self.hub, "history": self.history},
                 {"kind": "connector", "layout": self.layout.to_json(), "meta": self.meta})

    @classmethod
    def load(cls, path) -> Connector:
        arrays, meta = load_npz(path)
        if meta.get("kind") != "connector":
            raise LandscapeError(f"{path}: holds a {meta.get('kind')!r}, not a connector")
        return cls(torch.from_numpy(arrays["solutions"]), torch.from_numpy(arrays["hub"]),
                   Layout.from_json(meta["layout"]), arrays["history"], meta["meta"])


def _check(steps: int, lr: float, sampling: str, nodes: int) -> None:
    if int(steps) < 0:
        raise LandscapeError(f"steps: must be >= 0, got {steps}")
    if not lr > 0:
        raise LandscapeError(f"lr: must be > 0, got {lr}")
    if sampling not in SAMPLINGS:
        raise LandscapeError(f"sampling: must be one of {SAMPLINGS}, got {sampling!r}")
    if int(nodes) < 1:
        raise LandscapeError(f"quadrature_nodes: must be >= 1, got {nodes}")


def _optimize(param: Tensor, objective, steps: int, n: int, *, lr: float, momentum: float,
              weight_decay: float, batch_size: int | None, seed: int) -> np.ndarray:
    """Minimize ``objective(idx, rng)`` over ``param`` by torch's SGD; per-step values."""
    opt = torch.optim.SGD([param], lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = torch.Generator().manual_seed(int(seed) + 1)  # t and endpoint draws
    history = []
    for idx in batch_indices(n, batch_size, int(steps), seed):
        opt.zero_grad(set_to_none=True)
        value = objective(idx, rng)
        value.backward()
        opt.step()
        history.append(float(value.detach()))
    return np.asarray(history, dtype=np.float64)


def train_curve(model: nn.Module, loss_fn: LossFn, data: Data, start: Point, end: Point, *,
                kind: str = "bezier", bends: int = 1, steps: int = 1000, lr: float = 0.01,
                momentum: float = 0.9, weight_decay: float = 0.0,
                batch_size: int | None = 128, seed: int = 0, sampling: str = "uniform",
                quadrature_nodes: int = 4, init: Tensor | None = None, bn: str = "eval",
                params=None, dtype: torch.dtype | None = None) -> Curve:
    """Fit a ``kind`` curve with ``bends`` trainable nodes between ``start`` and ``end``
    (see the module doc). ``init`` (bends, P) overrides the straight-line start; ``bn``:
    "eval" (the model's running statistics) or "recompute" (batch statistics while
    training; evaluate the curve with ``bn="recompute"`` then)."""
    if kind not in CURVE_KINDS:
        raise LandscapeError(f"kind: must be one of {CURVE_KINDS}, got {kind!r}")
    if int(bends) < 1:
        raise LandscapeError(f"bends: must be >= 1, got {bends}")
    _check(steps, lr, sampling, quadrature_nodes)
    t0 = time.perf_counter()
    f = PointLoss(model, loss_fn, data, params=params, dtype=dtype, bn=bn)
    a, b = f.vector(start, "start"), f.vector(end, "end")
    nb = int(bends)
    if init is None:
        frac = torch.arange(1, nb + 1, dtype=f.dtype, device=f.device)[:, None] / (nb + 1)
        init = (1 - frac) * a + frac * b
    bend = f.layout.block(init, "init", dtype=f.dtype, device=f.device).clone()
    if bend.shape[0] != nb:
        raise LandscapeError(f"init: {bend.shape[0]} bends given, the curve has {nb}")
    bend.requires_grad_(True)
    if sampling == "quadrature":
        x, w = gauss_legendre(quadrature_nodes)
        if kind == "chain":  # the same rule on each of the b + 1 segments
            seg = nb + 1
            x = np.concatenate([(k + x) / seg for k in range(seg)])
            w = np.concatenate([w / seg for _ in range(seg)])
        qw = path_weights(kind, nb + 2, x).to(dtype=f.dtype, device=f.device)
        weights = torch.as_tensor(w, dtype=f.dtype, device=f.device)

    def objective(idx, rng):
        nodes = torch.cat([a[None], bend, b[None]])
        if sampling == "uniform":
            t = torch.rand(1, generator=rng, dtype=torch.float64)
            wt = path_weights(kind, nb + 2, t.numpy()).to(dtype=f.dtype, device=f.device)
            return f((wt @ nodes)[0], idx)
        thetas = qw @ nodes
        return sum(weights[q] * f(thetas[q], idx) for q in range(len(weights)))

    history = _optimize(bend, objective, steps, f.n, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    nodes = torch.cat([a[None], bend.detach(), b[None]])
    meta = {"bends": nb, "steps": int(steps), "lr": lr, "momentum": momentum,
            "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed,
            "sampling": sampling, "quadrature_nodes": quadrature_nodes, "bn": bn,
            "seconds": time.perf_counter() - t0}
    return Curve(kind, nodes, f.layout, history, meta)


def train_connector(model: nn.Module, loss_fn: LossFn, data: Data, solutions: Sequence[Point],
                    *, steps: int = 1000, lr: float = 0.01, momentum: float = 0.9,
                    weight_decay: float = 0.0, batch_size: int | None = 128, seed: int = 0,
                    sampling: str = "uniform", quadrature_nodes: int = 4,
                    init: Tensor | None = None, bn: str = "eval", params=None,
                    dtype: torch.dtype | None = None) -> Connector:
    """Join ``solutions`` (n ≥ 2 points) through one trained hub (see the module doc);
    the hub starts at their mean unless ``init`` is given. ``sampling="uniform"`` draws
    one solution and one t per step; "quadrature" sums over all of them."""
    _check(steps, lr, sampling, quadrature_nodes)
    t0 = time.perf_counter()
    f = PointLoss(model, loss_fn, data, params=params, dtype=dtype, bn=bn)
    if len(solutions) < 2:
        raise LandscapeError(f"solutions: need at least 2, got {len(solutions)}")
    sols = torch.stack([f.vector(s, f"solutions[{i}]") for i, s in enumerate(solutions)])
    n = sols.shape[0]
    hub = (sols.mean(0) if init is None else f.vector(init, "init")).clone().requires_grad_(True)
    if sampling == "quadrature":
        x, w = gauss_legendre(quadrature_nodes)
        qt = torch.as_tensor(x, dtype=f.dtype, device=f.device)
        qw = torch.as_tensor(w, dtype=f.dtype, device=f.device) / n

    def objective(idx, rng):
        if sampling == "uniform":
            i = int(torch.randint(n, (1,), generator=rng))
            t = float(torch.rand(1, generator=rng, dtype=torch.float64))
            return f((1 - t) * sols[i] + t * hub, idx)
        return sum(qw[q] * f((1 - qt[q]) * sols[i] + qt[q] * hub, idx)
                   for i in range(n) for q in range(len(qt)))

    history = _optimize(hub, objective, steps, f.n, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    meta = {"num_solutions": n, "steps": int(steps), "lr": lr, "momentum": momentum,
            "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed,
            "sampling": sampling, "quadrature_nodes": quadrature_nodes, "bn": bn,
            "seconds": time.perf_counter() - t0}
    return Connector(sols.detach(), hub.detach(), f.layout, history, meta)


def curve_values(model: nn.Module, loss_fn: LossFn, data: Data, curve: Curve, ts=None,
                 **eval_options) -> PathValues:
    """Loss and accuracy along a trained curve (default 25 values of t)."""
    return evaluate_path(model, loss_fn, data, curve.kind, curve.nodes, ts, **eval_options)


def connector_values(model: nn.Module, loss_fn: LossFn, data: Data, connector: Connector,
                     ts=None, **eval_options) -> dict[tuple[int, int], dict[str, PathValues]]:
    """For every pair i < j: the path w_i → hub → w_j ("connector") and the straight line
    w_i → w_j ("line"), evaluated on one shared evaluator."""
    ev = PointEvaluator(model, loss_fn, data, **eval_options)
    out = {}
    n = connector.solutions.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            out[(i, j)] = {
                "connector": evaluate_path(model, loss_fn, data, "chain",
                                           connector.pair_nodes(i, j), ts, evaluator=ev),
                "line": evaluate_path(model, loss_fn, data, "line",
                                      connector.solutions[[i, j]], ts, evaluator=ev),
            }
    return out
