"""Gradient noise on the fixed probe subset (Jastrzębski et al., ICLR 2020; McCandlish et
al., 2018).

With per-example gradients g_i, their mean ḡ and K = (1/n) Σ (g_i − ḡ)(g_i − ḡ)ᵀ
(:class:`~sgdlab.curvature.CovarianceOperator`, eval mode):

    Tr K = (1/n) Σ ||g_i||² − ||ḡ||²       (exact, from per-example gradient norms)
    λ_max(K)                               (Lanczos on K, warm-started)
    B_noise = Tr K / ||ḡ||²                (the "simple" gradient noise scale)
"""

from __future__ import annotations

import time

from sgdlab.probes.base import Probe, ProbeContext, Schedule, check_int, check_number


class GradientNoiseProbe(Probe):
    """``trace_K``, ``lambda_max_K``, ``grad_norm`` (||ḡ||), ``noise_scale`` (Tr K/||ḡ||²)
    on ``n`` fixed training examples."""

    name = "gradient_noise"

    def __init__(self, schedule: Schedule | None = None, *, n: int = 2048, top: bool = True,
                 tol: float = 1e-3) -> None:
        super().__init__(schedule)
        check_int(self.name, "n", n)
        check_number(self.name, "tol", tol, lambda v: 0 < v < 1, "in (0, 1)")
        self.n, self.top, self.tol = n, top, tol
        self.previous = None

    def measure(self, ctx: ProbeContext) -> dict:
        from sgdlab.curvature import curvature_operator, lanczos

        t0 = time.perf_counter()
        op = curvature_operator(ctx.model, ctx.loss_fn, ctx.subset(self.n), matrix="covariance")
        trace = op.exact_trace()
        gnorm2 = float(op.mean_gradient.double().pow(2).sum())
        out = {"trace_K": trace, "grad_norm": gnorm2 ** 0.5,
               "noise_scale": trace / gnorm2 if gnorm2 > 0 else float("inf")}
        if self.top:
            res = lanczos(op, 1, tol=self.tol, init=self.previous, generator=ctx.generator)
            self.previous = res.vectors.detach().clone()
            out["lambda_max_K"] = float(res.values[0])
            out["products"] = res.products
        out["seconds"] = time.perf_counter() - t0
        return out

    def state_dict(self) -> dict:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.previous = state.get("previous")
