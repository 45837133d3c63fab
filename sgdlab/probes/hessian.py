"""Hessian probes on a fixed probe subset: top-k eigenvalues (warm-started from the
previous measurement), trace with its standard error, and the spectral density.

Beside ``lambda_max`` the probe stores the stability threshold of (heavy-ball) gradient
descent on a quadratic, ``2/eta`` and, with momentum ``beta``, ``(2 + 2 beta)/eta``
(Cohen et al., ICLR 2021): gradient descent on a quadratic with curvature lambda diverges
iff lambda exceeds it.
"""

from __future__ import annotations

import torch

from sgdlab.probes.base import Probe, ProbeContext, Schedule, check_int, check_number


def stability_threshold(lr: float, momentum: float = 0.0) -> float:
    """``(2 + 2 beta) / eta``: the largest curvature (heavy-ball) GD is stable on."""
    return (2.0 + 2.0 * momentum) / lr


class HessianProbe(Probe):
    """Top-``k`` Hessian eigenvalues on ``n`` fixed training examples; optionally the
    trace (Hutch++ with standard error). Results: ``lambda_max``, ``lambda_max_err``,
    ``eig_<i>``, ``stability`` (2/eta or (2+2beta)/eta), ``residual_max``, ``products``,
    ``seconds``, ``trace`` and ``trace_se``; array ``eigenvalues``.

    ``lambda_max_err`` = ‖H v − θ v‖ is an error bar in the eigenvalue's own units: an
    eigenvalue of H lies within it of θ (and θ, a Rayleigh quotient, is at most λ_max), so
    a looser ``tol`` buys fewer products with an honest bound (bench-cpu.md)."""

    name = "hessian"

    def __init__(self, schedule: Schedule | None = None, *, k: int = 1, n: int = 2048,
                 tol: float = 1e-3, trace: bool = False, trace_rtol: float = 0.02,
                 trace_products: int = 200, warm_start: bool = True) -> None:
        super().__init__(schedule)
        check_int(self.name, "k", k)
        check_int(self.name, "n", n)
        check_number(self.name, "tol", tol, lambda v: 0 < v < 1, "in (0, 1)")
        check_number(self.name, "trace_rtol", trace_rtol, lambda v: v > 0, "> 0")
        check_int(self.name, "trace_products", trace_products, 30)
        self.k, self.n, self.tol, self.warm_start = k, n, tol, warm_start
        self.trace, self.trace_rtol, self.trace_products = trace, trace_rtol, trace_products
        self.previous: torch.Tensor | None = None

    def eig_request(self) -> tuple[int, int, float]:
        return self.k, self.n, self.tol

    def measure(self, ctx: ProbeContext) -> dict:
        init = self.previous if self.warm_start else None
        res = ctx.top_eigs(self.k, self.n, tol=self.tol, init=init)
        values = res.values[: self.k].double().cpu()
        self.previous = res.vectors[: self.k].detach().clone()
        out = {"lambda_max": values[0].item(), "eigenvalues": values.numpy(),
               "lambda_max_err": abs(values[0].item()) * float(res.residuals[0]),
               "stability": stability_threshold(ctx.lr, ctx.momentum),
               "residual_max": float(res.residuals[: self.k].max()),
               "products": res.products, "seconds": res.seconds}
        for i in range(1, self.k):
            out[f"eig_{i}"] = values[i].item()
        if self.trace:
            from sgdlab.curvature import hessian_trace

            tr = hessian_trace(ctx.model, ctx.loss_fn, ctx.subset(self.n), rtol=self.trace_rtol,
                               max_products=self.trace_products, generator=ctx.generator)
            out["trace"], out["trace_se"] = tr.estimate, tr.stderr
        return out

    def state_dict(self) -> dict:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.previous = state.get("previous")


class HessianDensityProbe(Probe):
    """Spectral density of the Hessian by stochastic Lanczos quadrature (on a sparse
    schedule: it costs ``vectors * steps`` products). Arrays ``grid``, ``density``."""

    name = "hessian_density"

    def __init__(self, schedule: Schedule | None = None, *, n: int = 2048, steps: int = 80,
                 vectors: int = 4, points: int = 400, sigma: float = 0.0) -> None:
        super().__init__(schedule)
        for key, value in (("n", n), ("steps", steps), ("vectors", vectors), ("points", points)):
            check_int(self.name, key, value)
        check_number(self.name, "sigma", sigma, lambda v: v >= 0, "a number >= 0")
        self.n, self.steps, self.vectors, self.points = n, steps, vectors, points
        self.sigma = sigma or None  # None: the engine's default broadening

    def measure(self, ctx: ProbeContext) -> dict:
        from sgdlab.curvature import hessian_density

        res = hessian_density(ctx.model, ctx.loss_fn, ctx.subset(self.n), num_steps=self.steps,
                              num_vectors=self.vectors, num_points=self.points, sigma=self.sigma,
                              generator=ctx.generator)
        return {"grid": res.grid.cpu().numpy(), "density": res.density.cpu().numpy(),
                "products": res.products}
