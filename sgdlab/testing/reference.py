"""Exact, obviously-correct references for curvature code (float64, dense, slow).

Everything here works on a float64 deep copy of the model, so the caller's model, its
buffers and gradients are untouched. Matrices are P x P over the selected parameters,
flattened in ``named_parameters`` order (the order of :mod:`sgdlab.curvature`):

* ``dense_hessian``: H = ∇²L(θ), L = (1/N) Σ_b n_b loss_fn(f(θ; x_b), y_b), by
  ``torch.func.hessian`` (forward-over-reverse, all P columns at once);
* ``per_sample_gradients``: g_i = ∇_θ loss_fn(f(θ; x_i[None]), y_i[None]) by a Python loop;
* ``exact_covariance``: K = (1/n) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ from that loop;
* ``dense_ggn``: G = Σ_b (n_b/N) J_bᵀ ∇²_out loss_b J_b with J_b = ∂f(θ; x_b)/∂θ by jacrev;
* ``eigh``: eigenpairs sorted as the curvature algorithms report them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev
from torch.nn.modules.batchnorm import _BatchNorm

Batch = tuple[Tensor, Tensor]


def _batches(data) -> list[Batch]:
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        return [(data[0], data[1])]
    return [(x, y) for x, y in data]


def _f64(t: Tensor) -> Tensor:
    return t.double() if t.is_floating_point() else t


def _setup(model: nn.Module, params: Sequence[str] | None, train: bool):
    """Float64 copy in the requested mode (train: BatchNorm uses batch stats, tracks nothing)."""
    m = copy.deepcopy(model).double()
    m.train(train)
    if train:
        for mod in m.modules():
            if isinstance(mod, _BatchNorm):
                mod.track_running_stats = False
    named = dict(m.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if params is None else list(params)
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


def mean_loss_function(model, loss_fn, data, params=None, train=False) -> tuple[Callable, Tensor]:
    """(L, θ0): L(θ_flat) = Σ_b (n_b/N) loss_fn(f(θ; x_b), y_b) in float64, and θ0."""
    m, theta, unflat = _setup(model, params, train)
    batches = [(_f64(x), _f64(y)) for x, y in _batches(data)]
    n_total = sum(len(y) for _, y in batches)

    def loss(theta: Tensor) -> Tensor:
        p = unflat(theta)
        return sum(loss_fn(functional_call(m, p, (x,)), y) * (len(y) / n_total) for x, y in batches)

    return loss, theta


def dense_hessian(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None, train: bool = False
) -> Tensor:
    """H = ∇²L(θ) as a dense float64 (P, P) matrix.

    Eval mode: ``torch.func.hessian``. Train mode: one double backward per unit vector,
    because torch.func's nested transforms give wrong second derivatives through
    train-mode batch_norm (seen on torch 2.13; cf. pytorch#196699); the tests check this
    reference against finite differences.
    """
    loss, theta = mean_loss_function(model, loss_fn, data, params, train)
    if not train:
        return hessian(loss)(theta)
    th = theta.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(th), th, create_graph=True)
    eye = torch.eye(len(th), dtype=th.dtype)
    return torch.stack([torch.autograd.grad(g, th, e, retain_graph=True)[0] for e in eye])


def per_sample_gradients(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None
) -> Tensor:
    """(n, P) matrix of per-example gradients, one autograd call per example (eval mode)."""
    m, theta, unflat = _setup(model, params, False)
    rows = []
    for x, y in _batches(data):
        x, y = _f64(x), _f64(y)
        for i in range(len(y)):
            th = theta.clone().requires_grad_()
            li = loss_fn(functional_call(m, unflat(th), (x[i : i + 1],)), y[i : i + 1])
            rows.append(torch.autograd.grad(li, th)[0])
    return torch.stack(rows)


def exact_covariance(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None
) -> Tensor:
    """K = (1/n) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ from per-sample gradients (float64, (P, P))."""
    g = per_sample_gradients(model, loss_fn, data, params)
    c = g - g.mean(0)
    return c.T @ c / len(g)


def dense_ggn(
    model: nn.Module, loss_fn, data, params: Sequence[str] | None = None, train: bool = False
) -> Tensor:
    """G = Σ_b (n_b/N) J_bᵀ H_b J_b, H_b = ∇²_out loss_fn(out, y_b) (float64, (P, P))."""
    m, theta, unflat = _setup(model, params, train)
    batches = [(_f64(x), _f64(y)) for x, y in _batches(data)]
    n_total = sum(len(y) for _, y in batches)
    out = torch.zeros(len(theta), len(theta), dtype=torch.float64)
    for x, y in batches:
        f = lambda th, x=x: functional_call(m, unflat(th), (x,))  # noqa: E731
        z = f(theta).detach()
        jac = jacrev(f)(theta).reshape(z.numel(), -1)
        h_out = hessian(lambda o, y=y: loss_fn(o, y))(z).reshape(z.numel(), z.numel())
        out += (len(y) / n_total) * jac.T @ h_out @ jac
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
