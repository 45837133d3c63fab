"""Many chains of one small network at once: SGD, SVAG and gradient descent with white noise
as a functional loop, with escape from a basin and trajectories over time.

The chains' parameters are stacked along a leading dimension (``torch.func.stack_module_state``)
and the network is evaluated with ``torch.func.functional_call`` under ``torch.func.vmap``
over chains, each chain with its own minibatch (indices drawn uniformly with replacement, as
in the finite-sum problems of :mod:`sgdlab.dynamics.finite_sum`). Nothing of sgdlab's trainer
is used: any ``nn.Module`` without buffers that change (no BatchNorm in training mode, no
dropout) and any loss ``loss(outputs, targets) -> mean`` will do.

Steps, with time t = h * steps in the units of SGD's t = eta * steps:

- SGD: theta <- theta - eta g_B, g_B the gradient of a minibatch of S examples;
- SVAG (Li, Malladi, Arora, NeurIPS 2021): theta <- theta - (eta/l)(c1 g_B1 + c2 g_B2),
  c_{1,2} = (1 ± sqrt(2l - 1))/2, two independent minibatches: the same drift and l times
  the noise covariance, so that as l grows it converges to the Itô SDE
  d theta = -grad L dt + sqrt(eta Sigma_S) dW of SGD at (eta, S), with only l minibatch
  gradients per unit of eta-time;
- white-noise GD: theta <- theta - eta (grad L + sigma xi), xi ~ N(0, I) (Xie et al. 2021's
  "GD with injected white noise").

:func:`escape_steps` runs chains until a per-chain statistic (the full training loss, say)
crosses a threshold, checked every ``check_every`` steps, dropping chains once they have
escaped; :func:`record` runs them for a number of steps and evaluates metrics on a grid of
steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from sgdlab.dynamics.schemes import svag_coefficients


def stack_states(model: nn.Module, states: list[dict[str, Tensor]] | None = None,
                 n_chains: int | None = None) -> dict[str, Tensor]:
    """Stacked parameters (chains, ...): of ``states`` (state dicts of ``model``), or of
    ``n_chains`` copies of ``model``'s own parameters."""
    names = [n for n, _ in model.named_parameters()]
    if states is None:
        if not n_chains:
            raise ValueError("stack_states: give states or n_chains")
        return {n: p.detach().unsqueeze(0).repeat(n_chains, *([1] * p.dim())).clone()
                for n, p in model.named_parameters()}
    modules = []
    for s in states:
        m = _copy(model)
        m.load_state_dict(s)
        modules.append(m)
    params, _ = stack_module_state(modules)
    return {n: params[n].detach().clone() for n in names}


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


class NetworkChains:
    """``n`` chains of ``model`` on one dataset ``(x, y)`` (see the module docstring)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 x: Tensor, y: Tensor, params: dict[str, Tensor], seed: int = 0):
        self.model, self.loss_fn, self.x, self.y = model, loss_fn, x, y
        self.params = {k: v.detach().to(x.device).clone() for k, v in params.items()}
        self.buffers = {k: v.to(x.device) for k, v in model.named_buffers()}
        self.n = len(x)
        self.gen = torch.Generator(device=x.device).manual_seed(seed)
        self.ids = torch.arange(self.n_chains)  # original indices of the live chains

        def loss_one(p, xb, yb):
            return self.loss_fn(functional_call(self.model, (p, self.buffers), (xb,)), yb)

        self._forward_batch = vmap(lambda p, xb: functional_call(self.model, (p, self.buffers),
                                                                 (xb,)))
        self._loss_batch = vmap(self.loss_fn)  # (chains, S, ...) -> (chains,)
        self._grad_shared = vmap(grad(loss_one), in_dims=(0, None, None))  # all on one batch
        self._loss_shared = vmap(loss_one, in_dims=(0, None, None))
        self._out_shared = vmap(lambda p, xb: functional_call(self.model, (p, self.buffers),
                                                              (xb,)), in_dims=(0, None))

    @property
    def n_chains(self) -> int:
        return next(iter(self.params.values())).shape[0]

    # -- gradients --------------------------------------------------------------------------
    def _indices(self, batch_size: int, copies: int = 1) -> Tensor:
        return torch.randint(self.n, (copies * self.n_chains, batch_size), generator=self.gen,
                             device=self.x.device)

    def minibatch_gradients(self, idx: Tensor) -> dict[str, Tensor]:
        """Per-chain gradients on the minibatches ``idx`` (chains, S): the forward pass
        vmapped over chains, one backward pass of the summed chain losses (the chains do
        not interact, so each chain's slice of the gradient is its own; faster on CPU than
        ``vmap(grad(...))``, tested equal to it)."""
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in self.params.items()}
            out = self._forward_batch(leaves, self.x[idx])
            total = self._loss_batch(out, self.y[idx]).sum()
            grads = torch.autograd.grad(total, list(leaves.values()))
        return dict(zip(leaves, grads))

    def full_gradients(self, chunk: int = 1024) -> dict[str, Tensor]:
        """Per-chain gradients of the full training loss (chunks weighted by size)."""
        total = None
        for i in range(0, self.n, chunk):
            xb, yb = self.x[i:i + chunk], self.y[i:i + chunk]
            g = self._grad_shared(self.params, xb, yb)
            w = len(xb) / self.n
            total = {k: v * w for k, v in g.items()} if total is None else \
                {k: total[k] + v * w for k, v in g.items()}
        return total

    # -- steps ------------------------------------------------------------------------------
    def _update(self, g: dict[str, Tensor], step: float) -> None:
        for k, v in g.items():
            self.params[k].sub_(v, alpha=step)

    def sgd_step(self, lr: float, batch_size: int) -> None:
        self._update(self.minibatch_gradients(self._indices(batch_size)), lr)

    def svag_step(self, lr: float, batch_size: int, l: int) -> None:
        if l == 1:
            return self.sgd_step(lr, batch_size)
        c1, c2 = svag_coefficients(l)
        m = self.n_chains
        idx = self._indices(batch_size, 2)
        g1 = self.minibatch_gradients(idx[:m])
        g2 = self.minibatch_gradients(idx[m:])
        self._update({k: c1 * g1[k] + c2 * g2[k] for k in g1}, lr / l)

    def white_noise_step(self, lr: float, std: float) -> None:
        g = self.full_gradients()
        for k, v in g.items():
            noise = torch.randn(v.shape, generator=self.gen, device=v.device, dtype=v.dtype)
            self.params[k].sub_(v + std * noise, alpha=lr)

    # -- measurements -------------------------------------------------------------------------
    @torch.no_grad()
    def losses(self, x: Tensor | None = None, y: Tensor | None = None,
               chunk: int = 1024) -> Tensor:
        """Mean loss of every chain on ``(x, y)`` (default: the training set): (chains,)."""
        x = self.x if x is None else x
        y = self.y if y is None else y
        total = torch.zeros(self.n_chains, dtype=next(iter(self.params.values())).dtype,
                            device=x.device)
        for i in range(0, len(x), chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            total += self._loss_shared(self.params, xb, yb) * (len(xb) / len(x))
        return total

    @torch.no_grad()
    def accuracies(self, x: Tensor, y: Tensor, chunk: int = 1024) -> Tensor:
        """Fraction of argmax hits of every chain on ``(x, y)`` (classification)."""
        hits = torch.zeros(self.n_chains, device=x.device)
        for i in range(0, len(x), chunk):
            out = self._out_shared(self.params, x[i:i + chunk])
            hits += (out.argmax(-1) == y[i:i + chunk]).sum(-1)
        return hits / len(x)

    def distances(self, origin: dict[str, Tensor]) -> Tensor:
        """|theta - origin| per chain (origin: one unstacked state or stacked (chains, ...))."""
        sq = 0.0
        for k, v in self.params.items():
            o = origin[k].to(v.device)
            o = o[self.ids] if o.dim() == v.dim() else o
            sq = sq + (v - o).pow(2).flatten(1).sum(1)
        return sq.sqrt()

    def keep(self, mask: Tensor) -> None:
        """Drop the chains where ``mask`` is False."""
        self.params = {k: v[mask] for k, v in self.params.items()}
        self.ids = self.ids[mask.to(self.ids.device)]


# -- runs -------------------------------------------------------------------------------------
@dataclass
class Escape:
    """Per chain, the first checked step at which the statistic crossed the threshold
    (-1: censored at ``max_steps``); ``time_step`` converts steps to time."""

    steps: np.ndarray
    max_steps: int
    time_step: float
    seconds: float

    @property
    def escaped(self) -> np.ndarray:
        return self.steps >= 0

    def mean_steps(self) -> tuple[float, float]:
        """Mean escape step and its SE when every chain escaped; otherwise the exponential
        MLE (escapes / steps at risk) inverted, with its delta-method SE."""
        k = int(self.escaped.sum())
        if k == len(self.steps) and k > 1:
            return float(self.steps.mean()), float(self.steps.std(ddof=1) / math.sqrt(k))
        if k == 0:
            return math.inf, math.nan
        exposure = float(np.where(self.escaped, self.steps, self.max_steps).sum())
        mean = exposure / k
        return mean, mean / math.sqrt(k)


def escape_steps(chains: NetworkChains, step: Callable[[NetworkChains], None],
                 statistic: Callable[[NetworkChains], Tensor], threshold, max_steps: int,
                 check_every: int = 1, time_step: float = 1.0) -> Escape:
    """Run ``step`` on every live chain until ``statistic(chains) >= threshold`` (a float or
    one per chain, indexed by the chains' original ids), checked every ``check_every``
    steps; escaped chains are dropped."""
    t0 = time.perf_counter()
    n = chains.n_chains
    out = np.full(n, -1, dtype=np.int64)
    thr = torch.as_tensor(threshold, dtype=torch.float64)
    done = 0
    while chains.n_chains and done < max_steps:
        for _ in range(min(check_every, max_steps - done)):
            step(chains)
            done += 1
        value = statistic(chains).to(torch.float64).cpu()
        limit = thr[chains.ids.cpu()] if thr.dim() else thr
        hit = value >= limit
        if bool(hit.any()):
            out[chains.ids[hit.to(chains.ids.device)].cpu().numpy()] = done
            chains.keep(~hit.to(value.device).to(next(iter(chains.params.values())).device))
    return Escape(out, max_steps, time_step, time.perf_counter() - t0)


def record(chains: NetworkChains, step: Callable[[NetworkChains], None], n_steps: int,
           at: list[int], metrics: Callable[[NetworkChains], dict[str, Tensor]]
           ) -> dict[str, np.ndarray]:
    """Run ``n_steps`` steps; at each step count in ``at`` (0 = the start) evaluate
    ``metrics`` (a dict of per-chain tensors): arrays (len(at), chains) per metric."""
    marks = sorted(set(int(a) for a in at if 0 <= a <= n_steps))
    out: dict[str, list] = {}

    def take():
        for k, v in metrics(chains).items():
            out.setdefault(k, []).append(v.detach().to(torch.float64).cpu().numpy())

    done = 0
    for mark in marks:
        while done < mark:
            step(chains)
            done += 1
        take()
    return {k: np.stack(v) for k, v in out.items()} | {"step": np.array(marks)}
