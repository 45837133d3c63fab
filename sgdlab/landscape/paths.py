"""Loss along paths between two parameter vectors, and their barriers.

A path θ(t), t ∈ [0, 1], runs from θ(0) = θ_A to θ(1) = θ_B: the straight line
θ(t) = (1 − t) θ_A + t θ_B (Goodfellow et al., ICLR 2015: init → solution, or solution →
solution), or a trained curve (:mod:`sgdlab.landscape.curves`). On a grid 0 = t_0 < … <
t_n = 1 (the endpoints are always evaluated) with L_i = L(θ(t_i)):

    barrier     = max_i [ L_i − ((1 − t_i) L_A + t_i L_B) ]    ≥ 0,

the largest rise of the loss above the chord between the two endpoint losses (the "loss
barrier" of linear mode connectivity, Frankle et al. 2020), at ``barrier_t``; and

    peak_excess = max_i L_i − max(L_A, L_B),

the height of the path's highest point above the higher endpoint (the "saddle" height of
Garipov et al. 2018 and Draxler et al. 2018; negative when the path dips below both). Both
are grid values: a finer grid can only raise them. For a quadratic
L(θ) = ½ (θ − c)ᵀ A (θ − c) the line gives L(t) = (1 − t) L_A + t L_B − ½ t(1 − t) ΔᵀAΔ
(Δ = θ_B − θ_A), so barrier = max(0, −ΔᵀAΔ / 8), reached at t = ½.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.evaluate import PointEvaluator
from sgdlab.landscape.layout import Data, Layout, LossFn, Point
from sgdlab.landscape.storage import load_npz, pack, save_npz, unpack


@dataclass
class PathValues:
    """Loss and accuracy at ``ts`` along a path, with its barrier (see the module doc).

    ``nodes`` are the path's defining points (a line: its two ends; a curve: its control
    points), ``kind`` says how ``nodes`` make θ(t) (see :func:`path_points`).
    """

    kind: str
    ts: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    nodes: Tensor
    layout: Layout
    meta: dict = field(default_factory=dict)

    def _at(self, t: float, values: np.ndarray) -> float:
        return float(values[int(np.flatnonzero(self.ts == t)[0])])

    @property
    def inside(self) -> np.ndarray:
        """Mask of the grid points with 0 ≤ t ≤ 1 (a line may be drawn beyond its ends)."""
        return (self.ts >= 0) & (self.ts <= 1)

    @property
    def endpoint_loss(self) -> tuple[float, float]:
        return self._at(0.0, self.loss), self._at(1.0, self.loss)

    @property
    def excess(self) -> np.ndarray:
        """L(θ(t)) minus the chord (1 − t) L_A + t L_B between the endpoint losses, on
        the grid points with 0 ≤ t ≤ 1."""
        la, lb = self.endpoint_loss
        t = self.ts[self.inside]
        return self.loss[self.inside] - ((1 - t) * la + t * lb)

    @property
    def barrier(self) -> float:
        return float(max(0.0, self.excess.max()))

    @property
    def barrier_t(self) -> float:
        return float(self.ts[self.inside][int(np.argmax(self.excess))])

    @property
    def peak_excess(self) -> float:
        return float(self.loss[self.inside].max() - max(self.endpoint_loss))

    @property
    def accuracy_drop(self) -> float:
        """Largest fall of accuracy below the chord between the endpoint accuracies."""
        a, b = self._at(0.0, self.accuracy), self._at(1.0, self.accuracy)
        t = self.ts[self.inside]
        return float(max(0.0, ((1 - t) * a + t * b - self.accuracy[self.inside]).max()))

    def points(self, ts) -> Tensor:
        return path_points(self.kind, self.nodes, ts)

    def summary(self) -> dict:
        return {"kind": self.kind, "barrier": self.barrier, "barrier_t": self.barrier_t,
                "peak_excess": self.peak_excess, "endpoint_loss": list(self.endpoint_loss),
                "max_loss": float(self.loss[self.inside].max()),
                "accuracy_drop": self.accuracy_drop}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Grid, values and nodes with the metadata (layout, settings, summary) as one dict
        of arrays (:func:`~sgdlab.landscape.storage.pack`)."""
        return pack({"ts": self.ts, "loss": self.loss, "accuracy": self.accuracy,
                     "nodes": self.nodes},
                    {"kind": "path", "path_kind": self.kind, "layout": self.layout.to_json(),
                     "meta": self.meta, "summary": self.summary()})

    @classmethod
    def from_arrays(cls, payload: dict, where="arrays") -> PathValues:
        arrays, meta = unpack(payload, where)
        if meta.get("kind") != "path":
            raise LandscapeError(f"{where}: holds a {meta.get('kind')!r}, not a path")
        return cls(meta["path_kind"], arrays["ts"], arrays["loss"], arrays["accuracy"],
                   torch.from_numpy(arrays["nodes"]), Layout.from_json(meta["layout"]),
                   meta["meta"])

    def save(self, path) -> None:
        save_npz(path, *unpack(self.to_arrays()))

    @classmethod
    def load(cls, path) -> PathValues:
        return cls.from_arrays(pack(*load_npz(path)), path)


def bernstein(degree: int, ts: Tensor) -> Tensor:
    """(len(ts), degree + 1) Bernstein basis b_{k,n}(t) = C(n, k) t^k (1 − t)^(n − k)."""
    k = torch.arange(degree + 1, dtype=ts.dtype, device=ts.device)
    binom = torch.tensor([float(math.comb(degree, i)) for i in range(degree + 1)],
                         dtype=ts.dtype, device=ts.device)
    t = ts[:, None]
    return binom * t**k * (1 - t) ** (degree - k)


def chain_weights(num_nodes: int, ts: Tensor) -> Tensor:
    """(len(ts), num_nodes) weights of a polygonal chain through nodes at t = k/(n−1):
    on [t_k, t_{k+1}] the point is (1 − s) node_k + s node_{k+1}, s = (t − t_k)(n − 1)."""
    segments = num_nodes - 1
    pos = ts.clamp(0, 1) * segments
    k = pos.floor().clamp(max=segments - 1).long()
    s = pos - k.to(ts.dtype)
    w = torch.zeros(len(ts), num_nodes, dtype=ts.dtype, device=ts.device)
    w.scatter_(1, k[:, None], (1 - s)[:, None])
    w.scatter_add_(1, (k + 1)[:, None], s[:, None])
    return w


PATH_KINDS = ("line", "bezier", "chain")


def path_weights(kind: str, num_nodes: int, ts) -> Tensor:
    """W (len(ts), num_nodes) with θ(t) = Σ_k W[t, k] node_k, float64."""
    ts = torch.as_tensor(np.asarray(ts, dtype=np.float64)).reshape(-1)
    if kind == "line":
        if num_nodes != 2:
            raise LandscapeError("a line has two nodes")
        return torch.stack([1 - ts, ts], dim=1)
    if kind == "bezier":
        return bernstein(num_nodes - 1, ts)
    if kind == "chain":
        return chain_weights(num_nodes, ts)
    raise LandscapeError(f"path kind: must be one of {PATH_KINDS}, got {kind!r}")


def path_points(kind: str, nodes: Tensor, ts) -> Tensor:
    """θ(t) for every t: (len(ts), P)."""
    w = path_weights(kind, nodes.shape[0], ts).to(dtype=nodes.dtype, device=nodes.device)
    return w @ nodes


def with_endpoints(ts, beyond: bool = False) -> np.ndarray:
    """The grid sorted with 0 and 1 added; values outside [0, 1] only when ``beyond``."""
    ts = np.asarray(ts, dtype=np.float64).reshape(-1)
    if not beyond and np.any((ts < 0) | (ts > 1)):
        raise LandscapeError("ts: a curve's parameters must lie in [0, 1]")
    return np.unique(np.concatenate([[0.0, 1.0], ts]))


def evaluate_path(model: nn.Module, loss_fn: LossFn, data: Data, kind: str, nodes: Tensor,
                  ts=None, *, evaluator: PointEvaluator | None = None,
                  **eval_options) -> PathValues:
    """Loss and accuracy along the path ``kind`` through ``nodes`` (k, P) at ``ts``
    (default 25 points; 0 and 1 always included)."""
    t0 = time.perf_counter()
    ev = evaluator or PointEvaluator(model, loss_fn, data, **eval_options)
    ts = with_endpoints(np.linspace(0, 1, 25) if ts is None else ts, beyond=kind == "line")
    nodes = ev.layout.block(nodes, "nodes", dtype=ev.dtype, device=ev.device)
    loss, acc = ev(path_points(kind, nodes, ts))
    meta = {"bn": ev.bn, "num_examples": ev.num_examples, "seconds": time.perf_counter() - t0}
    return PathValues(kind, ts, loss, acc, nodes.detach(), ev.layout, meta)


def interpolate(model: nn.Module, loss_fn: LossFn, data: Data, start: Point, end: Point,
                ts=None, **eval_options) -> PathValues:
    """The straight line from ``start`` to ``end`` (tensors, state dicts or modules of the
    model's architecture): loss, accuracy and barrier at ``ts`` (default 25 points in
    [0, 1]; values beyond, as Goodfellow et al. draw, extend the line past its ends and are
    left out of the barrier)."""
    layout = Layout.of(model, eval_options.get("params"))
    a = layout.vector(start, "start")
    b = layout.vector(end, "end", dtype=a.dtype, device=a.device)
    return evaluate_path(model, loss_fn, data, "line", torch.stack([a, b]), ts, **eval_options)
