"""Parameter vectors: the layout of a model's selected parameters and the points in it.

A *point* is a flat vector θ ∈ R^P of the selected parameters (default: every parameter
with ``requires_grad``), concatenated in ``named_parameters`` order, the order of
:func:`sgdlab.curvature.flatten` and of ``hessian_eigs(...).vectors``. Every function of
the layer accepts a point as a (P,) tensor, a state dict (extra keys such as BatchNorm
buffers are ignored; every selected name must be present with its shape) or a module of
the same architecture, and converts it with :meth:`Layout.vector`.

Data is one ``(x, y)`` pair or an iterable of pairs, as in :mod:`sgdlab.curvature`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sgdlab.curvature import flatten, unflatten
from sgdlab.landscape.errors import LandscapeError

Batch = tuple[Tensor, Tensor]
Data = Batch | Iterable[Batch]
LossFn = Callable[[Tensor, Tensor], Tensor]
Point = Tensor | Mapping[str, Tensor] | nn.Module
ParamSpec = None | Sequence[str] | Callable[[str], bool]


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the selected parameters, in ``named_parameters`` order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module, params: ParamSpec = None) -> Layout:
        """The layout of ``model``'s parameters: all trainable ones (``params=None``), a list
        of names, or a predicate on names."""
        if not isinstance(model, nn.Module):
            raise LandscapeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        named = list(model.named_parameters())
        if params is None:
            chosen = [(n, p) for n, p in named if p.requires_grad]
        elif callable(params):
            chosen = [(n, p) for n, p in named if params(n)]
        else:
            wanted = list(params)
            known = {n for n, _ in named}
            for n in wanted:
                if n not in known:
                    raise LandscapeError(f"params: the model has no parameter named {n!r}")
            chosen = [(n, p) for n, p in named if n in set(wanted)]
        if not chosen:
            raise LandscapeError("params: the selection contains no parameter")
        return cls(tuple(n for n, _ in chosen), tuple(tuple(p.shape) for _, p in chosen))

    @property
    def sizes(self) -> list[int]:
        return [int(torch.Size(s).numel()) for s in self.shapes]

    @property
    def dim(self) -> int:
        """P, the number of entries of a point."""
        return sum(self.sizes)

    def to_json(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, d: Mapping) -> Layout:
        return cls(tuple(d["names"]), tuple(tuple(int(i) for i in s) for s in d["shapes"]))

    # ------------------------------------------------------------------ points
    def vector(self, point: Point, what: str = "point", *, dtype=None, device=None) -> Tensor:
        """The flat (P,) vector of a point given as a tensor, a state dict or a module."""
        if isinstance(point, nn.Module):
            point = dict(point.named_parameters())
        if isinstance(point, Mapping):
            parts = []
            for n, s in zip(self.names, self.shapes):
                if n not in point:
                    raise LandscapeError(
                        f"{what}: has no parameter {n!r} (different architecture?)")
                t = point[n]
                if tuple(t.shape) != s:
                    raise LandscapeError(
                        f"{what}: parameter {n!r} has shape {tuple(t.shape)}, the model's is {s}"
                    )
                parts.append(t.detach())
            vec = flatten(parts)
        elif isinstance(point, Tensor):
            vec = point.detach()
            if vec.ndim != 1 or vec.numel() != self.dim:
                raise LandscapeError(
                    f"{what}: expected a vector of {self.dim} entries, got shape {tuple(vec.shape)}"
                )
        else:
            raise LandscapeError(
                f"{what}: expected a tensor, a state dict or a module, got {type(point).__name__}"
            )
        return vec.to(dtype=dtype or vec.dtype, device=device or vec.device)

    def block(self, vectors: Tensor | Sequence[Point], what: str = "points", **kw) -> Tensor:
        """An (m, P) block from an (m, P) tensor or a sequence of points."""
        if isinstance(vectors, Tensor):
            if vectors.ndim == 1:
                vectors = vectors[None]
            if vectors.ndim != 2 or vectors.shape[1] != self.dim:
                raise LandscapeError(
                    f"{what}: expected shape (m, {self.dim}), got {tuple(vectors.shape)}"
                )
            return vectors.detach().to(dtype=kw.get("dtype") or vectors.dtype,
                                       device=kw.get("device") or vectors.device)
        rows = [self.vector(p, f"{what}[{i}]", **kw) for i, p in enumerate(vectors)]
        if not rows:
            raise LandscapeError(f"{what}: no point given")
        return torch.stack(rows)

    def tensors(self, vector: Tensor) -> dict[str, Tensor]:
        """name → tensor views of a (P,) vector (or (m, P) block: leading dims kept)."""
        return dict(zip(self.names, unflatten(vector, self.shapes)))

    def check_compatible(self, other: Layout, what: str) -> None:
        if other != self:
            for n, s, (n2, s2) in zip(self.names, self.shapes, zip(other.names, other.shapes)):
                if n != n2 or s != s2:
                    raise LandscapeError(
                        f"{what}: parameter {n2!r} {s2} where the model has {n!r} {s}")
            raise LandscapeError(
                f"{what}: {len(other.names)} parameters where the model has {len(self.names)}"
            )


def model_at(model: nn.Module, point: Tensor, layout: Layout) -> nn.Module:
    """A deep copy of ``model`` with the selected parameters set to ``point`` (buffers and
    other parameters copied as they are)."""
    m = copy.deepcopy(model)
    named = dict(m.named_parameters())
    with torch.no_grad():
        for n, t in layout.tensors(point.to(next(iter(named.values())).device)).items():
            named[n].copy_(t)
    return m


def as_batches(data: Data) -> list[Batch]:
    """Data as a non-empty list of (x, y) pairs with matching lengths."""
    pair = isinstance(data, (tuple, list)) and len(data) == 2
    if pair and all(isinstance(t, Tensor) for t in data):
        batches = [(data[0], data[1])]
    else:
        try:
            batches = [tuple(b) for b in data]  # type: ignore[union-attr]
        except TypeError as err:
            raise LandscapeError(
                "data: expected a pair (x, y) of tensors or an iterable of pairs") from err
        if not batches or any(len(b) != 2 for b in batches):
            raise LandscapeError(
                "data: expected a pair (x, y) of tensors or a non-empty iterable of pairs")
    for x, y in batches:
        if len(x) != len(y):
            raise LandscapeError(f"data: a batch has {len(x)} inputs but {len(y)} targets")
    if sum(len(y) for _, y in batches) == 0:
        raise LandscapeError("data: contains no example")
    return batches  # type: ignore[return-value]


def fixed_subset(data: Data, n: int | None, seed: int = 0) -> Batch:
    """One (x, y) pair: all the data (``n=None``) or the first ``n`` examples of a
    permutation drawn from ``torch.Generator().manual_seed(seed)`` (the same examples on
    every call and every machine)."""
    batches = as_batches(data)
    x = torch.cat([b[0] for b in batches]) if len(batches) > 1 else batches[0][0]
    y = torch.cat([b[1] for b in batches]) if len(batches) > 1 else batches[0][1]
    if n is None:
        return x, y
    if not 1 <= int(n) <= len(y):
        raise LandscapeError(f"subset: must be between 1 and {len(y)} examples, got {n}")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed)))[: int(n)]
    idx = idx.to(y.device)
    return x[idx], y[idx]
