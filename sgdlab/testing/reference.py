"""Exact, obviously-correct references for curvature code (float64, dense, slow).

Everything here works on a float64 deep copy of the model, so the caller's model, its
buffers and gradients are untouched. Matrices are P x P over the selected parameters,
flattened in ``named_parameters`` order (the order of :mod:`sgdlab.curvature`):

* ``dense_hessian``: H = ∇²L(θ), L = Σ_b w_b loss_fn(f(θ; x_b), y_b) with w_b = n_b/N
  (``reduction="mean"``) or 1 (``"sum"``), column by column by autograd double backward;
* ``per_sample_gradients``: g_i = ∇_θ loss_fn(f(θ; x_i[None]), y_i[None]) by a Python loop;
* ``exact_covariance``: K = c Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ from that loop, c = 1/n or 1;
* ``dense_ggn``: G = Σ_b w_b J_bᵀ ∇²_out loss_b J_b with J_b = ∂f(θ; x_b)/∂θ by jacrev;
* ``eigh``: eigenpairs sorted as the curvature algorithms report them.

Batches of other structures take ``forward(model, batch)`` and ``loss(output, batch)``
(as :class:`sgdlab.curvature.CurvatureOptions`); attention runs on PyTorch's math kernel.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils import _pytree as pytree

Batch = Any


def _batches(data) -> list[Batch]:
    if isinstance(data, dict) or (
        isinstance(data, (tuple, list)) and all(isinstance(t, Tensor) for t in data)
    ):
        return [data]
    return list(data)


def _f64(batch: Batch) -> Batch:
    return pytree.tree_map(
        lambda t: t.double() if isinstance(t, Tensor) and t.is_floating_point() else t, batch)


def _size(batch: Batch) -> int:
    return next(len(t) for t in pytree.tree_leaves(batch) if isinstance(t, Tensor) and t.ndim)


def _example(batch: Batch, i: int) -> Batch:
    """Example i of a batch, batch dimension kept (tensors with the batch's leading size)."""
    n = _size(batch)
    return pytree.tree_map(
        lambda t: t[i : i + 1] if isinstance(t, Tensor) and t.ndim and len(t) == n else t, batch)


def _weight(n: int, total: int, reduction: str) -> float:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return n / total if reduction == "mean" else 1.0


class _Call(nn.Module):
    def __init__(self, model: nn.Module, forward: Callable) -> None:
        super().__init__()
        self.model, self.fwd = model, forward

    def forward(self, batch: Batch) -> Any:
        return self.fwd(self.model, batch)


def _caller(m: nn.Module, forward: Callable | None) -> Callable[[dict, Batch], Any]:
    """f(params, batch): the model's output with ``params`` (names as in ``m``)."""
    if forward is None:
        return lambda p, batch: functional_call(m, p, (batch[0],))
    wrapped = _Call(m, forward)
    return lambda p, batch: functional_call(
        wrapped, {f"model.{k}": v for k, v in p.items()}, (batch,))


def _loss_of(loss_fn: Callable | None, loss: Callable | None) -> Callable[[Any, Batch], Tensor]:
    return loss if loss is not None else (lambda out, batch: loss_fn(out, batch[1]))


def _math_attention():
    return sdpa_kernel(SDPBackend.MATH)


def _setup(model: nn.Module, params: Sequence[str] | None, train: bool):
    """Float64 copy in the requested mode (train: BatchNorm uses batch stats, tracks nothing)."""
    m = copy.deepcopy(model).double()
    m.train(train)
    if train:
        for mod in m.modules():
            if isinstance(mod, _BatchNorm):
                mod.track_running_stats = False
    named = dict(m.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:  # any name of a tied parameter selects it (named_parameters lists its first)
        alias = {n: next(c for c, q in named.items() if q is p)
                 for n, p in m.named_parameters(remove_duplicate=False)}
        wanted = {alias[n] for n in params}
        names = [n for n in named if n in wanted]
    theta = torch.cat([named[n].detach().reshape(-1) for n in names])
    shapes = [named[n].shape for n in names]
    fixed = {n: p.detach() for n, p in named.items() if n not in names}
    fixed.update({n: b.detach() for n, b in m.named_buffers()})

    def unflat(theta: Tensor) -> dict[str, Tensor]:
        out, i = dict(fixed), 0
        for n, s in zip(names, shapes):
            out[n] = theta[i : i + s.numel()].reshape(s)
            i += s.numel()
        return out

    return m, theta, unflat


def mean_loss_function(model, loss_fn, data, params=None, train=False, reduction="mean",
                       forward=None, loss=None) -> tuple[Callable, Tensor]:
    """(L, θ0): L(θ_flat) = Σ_b w_b loss_fn(f(θ; x_b), y_b) in float64 (w_b = n_b/N for
    ``reduction="mean"``, 1 for ``"sum"``), and θ0."""
    m, theta, unflat = _setup(model, params, train)
    batches = [_f64(b) for b in _batches(data)]
    n_total = sum(_size(b) for b in batches)
    call, batch_loss = _caller(m, forward), _loss_of(loss_fn, loss)

    def total(theta: Tensor) -> Tensor:
        p = unflat(theta)
        with _math_attention():
            return sum(batch_loss(call(p, b), b) * _weight(_size(b), n_total, reduction)
                       for b in batches)

    return total, theta


def dense_hessian(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None, train: bool = False,
    reduction: str = "mean", forward: Callable | None = None, loss: Callable | None = None,
) -> Tensor:
    """H = ∇²L(θ) as a dense float64 (P, P) matrix: one autograd double backward per unit
    vector.

    Not ``torch.func.hessian``: its nested transforms give wrong second derivatives
    through train-mode batch_norm and through layer_norm's weight (torch 2.13: 25% off on
    the ``transformer_dict`` case, while double backward matches finite differences to
    1e-8; cf. pytorch#196699, pytorch#196700); the tests check this reference against
    finite differences.
    """
    total, theta = mean_loss_function(model, loss_fn, data, params, train, reduction, forward,
                                      loss)
    th = theta.clone().requires_grad_()
    (g,) = torch.autograd.grad(total(th), th, create_graph=True)
    eye = torch.eye(len(th), dtype=th.dtype)
    return torch.stack([torch.autograd.grad(g, th, e, retain_graph=True)[0] for e in eye])


def per_sample_gradients(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None,
    forward: Callable | None = None, loss: Callable | None = None, train: bool = False,
) -> Tensor:
    """(n, P) matrix of per-example gradients, one autograd call per example.

    Eval mode: example i alone through the model. Train mode (BatchNorm couples a batch):
    ℓ_i is example i's loss on the output of its whole batch, g_i = ∇ℓ_i.
    """
    m, theta, unflat = _setup(model, params, train)
    call, batch_loss = _caller(m, forward), _loss_of(loss_fn, loss)
    rows = []
    for b in _batches(data):
        b = _f64(b)
        for i in range(_size(b)):
            th = theta.clone().requires_grad_()
            one = _example(b, i)
            with _math_attention():
                if train:
                    out = call(unflat(th), b)
                    li = batch_loss(pytree.tree_map(lambda t, i=i: t[i : i + 1], out), one)
                else:
                    li = batch_loss(call(unflat(th), one), one)
            rows.append(torch.autograd.grad(li, th)[0])
    return torch.stack(rows)


def exact_covariance(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None,
    reduction: str = "mean", forward: Callable | None = None, loss: Callable | None = None,
    train: bool = False,
) -> Tensor:
    """K = c Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ from per-sample gradients (float64, (P, P)); c = 1/n
    for a mean loss (the covariance), 1 for a sum."""
    g = per_sample_gradients(model, loss_fn, data, params, forward, loss, train)
    c = g - g.mean(0)
    return c.T @ c * _weight(1, len(g), reduction)


def dense_ggn(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None, train: bool = False,
    reduction: str = "mean", forward: Callable | None = None, loss: Callable | None = None,
) -> Tensor:
    """G = Σ_b w_b J_bᵀ H_b J_b, H_b = ∇²_out loss_fn(out, y_b) (float64, (P, P))."""
    m, theta, unflat = _setup(model, params, train)
    batches = [_f64(b) for b in _batches(data)]
    n_total = sum(_size(b) for b in batches)
    call, batch_loss = _caller(m, forward), _loss_of(loss_fn, loss)
    out = torch.zeros(len(theta), len(theta), dtype=torch.float64)
    for b in batches:
        f = lambda th, b=b: call(unflat(th), b)  # noqa: E731
        with _math_attention():
            z = f(theta).detach()
            jac = jacrev(f)(theta).reshape(z.numel(), -1)
            h_out = hessian(lambda o, b=b: batch_loss(o, b))(z).reshape(z.numel(), z.numel())
        out += _weight(_size(b), n_total, reduction) * jac.T @ h_out @ jac
    return out


def eigh(matrix: Tensor, which: str = "LA") -> tuple[Tensor, Tensor]:
    """Eigenvalues and eigenvectors (rows) of a symmetric matrix, in float64.

    Ordered as the algorithms report them: ``"LA"`` largest first, ``"SA"`` smallest
    first, ``"LM"`` by decreasing magnitude.
    """
    vals, vecs = torch.linalg.eigh(matrix.double())
    if which == "LA":
        order = torch.argsort(vals, descending=True)
    elif which == "SA":
        order = torch.argsort(vals)
    elif which == "LM":
        order = torch.argsort(vals.abs(), descending=True)
    else:
        raise ValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
    return vals[order], vecs[:, order].T.contiguous()
