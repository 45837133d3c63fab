"""The Hessian of the loss as a linear operator, with three HVP backends.

H = ∇²L(θ),  L(θ) = Σ_b w_b · loss_b(θ), w_b = n_b/N (mean) or 1 (sum)
(see :class:`ModelFunction`).

Backends for H v:

``"graph"``      build g = ∇L with ``create_graph=True`` once (all chunks), keep the graph,
                 and answer each product by one backward through it: H v = ∇_θ (gᵀ v).
                 Cheapest per product (no forward pass), memory ~ one training step's
                 activations for the whole dataset plus their backward.
``"recompute"``  per chunk: forward, create_graph backward, then the second backward;
                 memory of one chunk, about 1.5-2x the time of ``"graph"`` per product.
``"func"``       per chunk, forward-over-reverse with ``torch.func``:
                 H v = jvp(grad(L), θ, v); memory of one chunk, no retained graph.
``"auto"``       ``"graph"`` when the measured graph size for all the data fits the memory
                 budget, otherwise ``"recompute"`` on chunks sized to fit (eval mode; in
                 train mode on the batches as given, with a warning if one is too big).

A block V (m, P) is multiplied either vector by vector or, with ``batched=True``, in one
vmapped backward (``is_grads_batched``) / one ``vmap`` of the jvp; batching is the default
on CUDA, where it amortizes kernel launches, and off on CPU, where it is slower.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from sgdlab.curvature import batches as B
from sgdlab.curvature.flat import flatten
from sgdlab.curvature.model_function import Data, LossFn, ModelOperator
from sgdlab.curvature.options import CurvatureOptions

BACKENDS = ("auto", "graph", "recompute", "func")


def _second_backward(
    grads: list[Tensor], leaves: tuple[Tensor, ...], vs: list[Tensor], retain: bool,
    batched: bool, out: Tensor | None = None,
) -> Tensor:
    """Σ_j ∇_θ (g_j · v_j) for rows of a block: returns (m, P), written in place into
    ``out`` or a new tensor (no concatenation copies: at small batches a product costs
    little more than a few passes over P numbers)."""
    m = vs[0].shape[0]
    sizes = [p.numel() for p in leaves]
    out = leaves[0].new_empty(m, sum(sizes)) if out is None else out
    if not grads:
        return out.zero_()
    parts = out.split(sizes, dim=1)

    def fill(hv: tuple[Tensor | None, ...], row: int | slice) -> None:
        for h, part in zip(hv, parts):
            if h is None:
                part[row].zero_()
            else:
                part[row].copy_(h.reshape(part[row].shape))

    if batched and m > 1:
        hv = torch.autograd.grad(
            grads, leaves, vs, retain_graph=retain, allow_unused=True, is_grads_batched=True
        )
        fill(hv, slice(None))
        return out
    for r in range(m):
        hv = torch.autograd.grad(
            grads, leaves, [v[r] for v in vs], retain_graph=retain or r < m - 1, allow_unused=True
        )
        fill(hv, r)
    return out


def _sum_grads(
    total: list[Tensor | None] | None, g: tuple[Tensor | None, ...]
) -> list[Tensor | None]:
    if total is None:
        return list(g)
    return [b if a is None else a if b is None else a + b for a, b in zip(total, g)]


class HessianOperator(ModelOperator):
    """H = ∇²L(θ) of the mean loss over ``data``, as a symmetric operator on R^P.

    Args:
        model, loss_fn, data: ``loss_fn(model(x), y)`` is the loss of a batch (a mean over
            its examples, or a sum with ``reduction="sum"``); ``data`` is ``(x, y)``, an
            iterable of such batches (weighted by their sizes) or a dataset of examples;
            ``forward=`` and ``loss=`` take batches of any structure
            (:class:`~sgdlab.curvature.CurvatureOptions`).
        options / fields: a :class:`~sgdlab.curvature.CurvatureOptions` and/or its fields
            as keywords (params, train, chunk_size, dtype, memory_budget, batched, seed);
            ``backend`` is ``"auto"``, ``"graph"``, ``"recompute"`` or ``"func"`` (module
            docstring).

    With the ``"graph"`` backend, ``self.gradient`` is ∇L(θ) (flat) and ``free()`` releases
    the retained graph. The operator is the Hessian at the parameters' values when it was
    built: build a new one after the model changes.
    """

    BACKENDS = BACKENDS

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Data,
                 options: CurvatureOptions | None = None, **fields: Any):
        super().__init__(model, loss_fn, data, options, **fields)
        self.backend = self._choose(self.options.backend)
        self._graph: tuple[tuple[Tensor, ...], list[Tensor], list[int]] | None = None
        if self.backend == "graph":
            self._build_graph()

    def _choose(self, backend: str) -> str:
        if backend != "auto":
            return backend
        per_example = 2.0 * self.fn.graph_bytes_per_example()  # measured peak: ~1.8x
        if per_example * self.fn.num_examples <= self.fn.memory_budget:
            return "graph"
        self.fit_chunks(per_example, 0.25, "its graph")
        return "recompute"

    def _build_graph(self) -> None:
        fn = self.fn
        leaves = fn.leaves()
        total = None
        with fn.mode():
            for i in range(len(fn.batches)):
                g = torch.autograd.grad(
                    fn.chunk_loss(leaves, i), leaves, create_graph=True, allow_unused=True
                )
                total = _sum_grads(total, g)
        assert total is not None
        keep = [j for j, g in enumerate(total) if g is not None and g.requires_grad]
        self.gradient = flatten(
            [g.detach() if g is not None else torch.zeros_like(p) for g, p in zip(total, leaves)]
        )
        self._graph = (leaves, [total[j] for j in keep], keep)  # type: ignore[misc]

    def free(self) -> None:
        """Release the retained graph (``"graph"`` backend); later products fail."""
        self._graph = None

    def _matmat(self, V: Tensor) -> Tensor:
        return self._product(V)

    def _matmat_into(self, V: Tensor, out: Tensor) -> Tensor:
        if type(self)._matmat is not HessianOperator._matmat:  # a subclass's own product
            return out.copy_(self._matmat(V))
        return self._product(V, out)

    def _product(self, V: Tensor, out: Tensor | None = None) -> Tensor:
        vs = self.fn.unflatten(V)
        if self.backend == "graph":
            if self._graph is None:
                raise RuntimeError("HessianOperator: the retained graph was freed")
            leaves, grads, keep = self._graph
            return _second_backward(grads, leaves, [vs[j] for j in keep], True, self.batched,
                                    out)
        hv = self._recompute(vs) if self.backend == "recompute" else self._func(vs)
        return hv if out is None else out.copy_(hv)

    def _recompute(self, vs: list[Tensor]) -> Tensor:
        fn = self.fn
        out = None
        with fn.mode():
            for i in range(len(fn.batches)):
                leaves = fn.leaves()
                g = torch.autograd.grad(
                    fn.chunk_loss(leaves, i), leaves, create_graph=True, allow_unused=True
                )
                keep = [j for j, gj in enumerate(g) if gj is not None and gj.requires_grad]
                hv = _second_backward(
                    [g[j] for j in keep], leaves, [vs[j] for j in keep], False, self.batched
                )
                out = hv if out is None else out + hv
        return out

    def _func(self, vs: list[Tensor]) -> Tensor:
        fn = self.fn
        m = vs[0].shape[0]
        out = None
        with fn.mode():
            for i in range(len(fn.batches)):
                # The batch's floating tensors enter the jvp as inputs with explicit zero
                # tangents: works around pytorch#123996 (mse_loss under jvp(grad) fails on
                # a ZeroTensor tangent of a closed-over target).
                floats, rebuild = B.floating(fn.batch(i))
                zeros = [torch.zeros_like(t) for t in floats]
                gfun = grad(lambda p, f, i=i, rebuild=rebuild: fn.chunk_loss(p, i, rebuild(f)))

                def hvp(t: tuple[Tensor, ...], gfun=gfun, floats=floats,
                        zeros=zeros) -> tuple[Tensor, ...]:
                    return jvp(gfun, (fn.primals, floats), (t, zeros))[1]

                if self.batched and m > 1:  # "same": one dropout mask, as unbatched
                    hvs = vmap(hvp, randomness="same")(tuple(vs))
                    hv = torch.cat([h.reshape(m, -1) for h in hvs], dim=1)
                else:
                    hv = torch.stack([flatten(hvp(tuple(v[r] for v in vs))) for r in range(m)])
                out = hv if out is None else out + hv
        return out
