"""Gradient noise on the fixed probe subset (Jastrzębski et al., ICLR 2020; McCandlish et
al., 2018).

With per-example gradients g_i, their mean ḡ and K = (1/n) Σ (g_i − ḡ)(g_i − ḡ)ᵀ:

    Tr K = (1/n) Σ ||g_i||² − ||ḡ||²       (exact, from per-example gradient norms)
    λ_max(K)                               (Lanczos on the matrix-free K operator)
    B_noise = Tr K / ||ḡ||²                (the "simple" gradient noise scale)
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from sgdlab.probes import register
from sgdlab.probes.base import Probe, ProbeContext, Schedule
from sgdlab.train.evaluate import eval_mode
from sgdlab.train.losses import per_example_loss


def gradient_moments(model, loss: str, x, y, chunk: int = 128) -> tuple[torch.Tensor, float]:
    """Mean gradient ḡ (flat, float64) and mean squared per-example gradient norm, by
    per-example gradients (torch.func.vmap) in chunks; eval mode, parameters untouched."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def one(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return per_example_loss(loss, out, yi.unsqueeze(0)).sum()

    per_example = vmap(grad(one), in_dims=(None, 0, 0))
    total = None
    sq = torch.zeros((), dtype=torch.float64, device=x.device)
    with eval_mode(model):
        for i in range(0, len(x), chunk):
            g = per_example(params, x[i:i + chunk], y[i:i + chunk])
            flat = torch.cat([g[n].reshape(len(g[n]), -1) for n in names], dim=1).double()
            sq += flat.pow(2).sum()
            s = flat.sum(0)
            total = s if total is None else total + s
    return total / len(x), (sq / len(x)).item()


@register
class GradientNoiseProbe(Probe):
    """``trace_K``, ``lambda_max_K``, ``grad_norm`` (||ḡ||), ``noise_scale`` (Tr K/||ḡ||²)
    on ``n`` fixed training examples."""

    name = "gradient_noise"

    def __init__(self, schedule: Schedule | None = None, *, n: int = 2048, top: bool = True,
                 tol: float = 1e-3, chunk: int = 128) -> None:
        super().__init__(schedule)
        self.n, self.top, self.tol, self.chunk = n, top, tol, chunk
        self.previous = None

    def measure(self, ctx: ProbeContext) -> dict:
        x, y = ctx.subset(self.n)
        mean, mean_sq = gradient_moments(ctx.model, ctx.loss, x, y, self.chunk)
        gnorm2 = mean.pow(2).sum().item()
        trace = mean_sq - gnorm2
        out = {"trace_K": trace, "grad_norm": gnorm2 ** 0.5,
               "noise_scale": trace / gnorm2 if gnorm2 > 0 else float("inf")}
        if self.top:
            from sgdlab.curvature import covariance_eigs

            res = covariance_eigs(ctx.model, ctx.loss_fn, (x, y), k=1, tol=self.tol,
                                  init=self.previous, generator=ctx.generator,
                                  loss=ctx.loss)
            self.previous = res.vectors.detach().clone()
            out["lambda_max_K"] = float(res.values[0])
        return out

    def state_dict(self) -> dict:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.previous = state.get("previous")
