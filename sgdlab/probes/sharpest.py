"""Sharpest directions along the trajectory (Jastrzębski et al., ICLR 2019).

At a due step, with v_1..v_k the top Hessian eigenvectors on the probe subset and Δ the
step the optimizer is about to take (``ctx.planned_update``: −η g for plain SGD with
mini-batch gradient g; the velocity step with momentum; the nudged step for NSGD; −η g
when a loop of one's own does not provide it):

- the "bowl": the probe-subset loss L(θ + u s_i v_i) for offsets u on a grid, where
  s_i = |⟨Δ, v_i⟩| is the length of the step's projection on v_i (u = ±1 is one SGD step
  along v_i); arrays ``offsets`` (m,), ``bowl`` (k, m), ``step_projection`` (k,);
- after the optimizer step, the projection of the actual update Δθ on the subspace:
  ``update_in_subspace`` = ||V Δθ|| / ||Δθ||, and per direction ``update_projection``;
- ``overlap``: (1/k) ||V_prev V_tᵀ||_F², the overlap of the top-k subspace with the
  previous measurement's (1 = same subspace).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call

from sgdlab.evaluation import eval_mode
from sgdlab.probes.base import Probe, ProbeContext, Schedule, check_int, check_number


@torch.no_grad()
def loss_along(model, loss_fn, x, y, direction: torch.Tensor, offsets) -> torch.Tensor:
    """``L(θ + t d)`` for each ``t`` in ``offsets`` (eval mode, model untouched)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    pieces = torch.split(direction.to(named[0][1].dtype), [p.numel() for _, p in named])
    buffers = dict(model.named_buffers())
    out = []
    with eval_mode(model):
        for t in offsets:
            params = {n: p + float(t) * d.view_as(p) for (n, p), d in zip(named, pieces)}
            out.append(loss_fn(functional_call(model, (params, buffers), (x,)), y).double())
    return torch.stack(out)


class SharpestProbe(Probe):
    """Bowl plots, step projections and subspace overlap for the top-``k`` directions."""

    name = "sharpest"

    def __init__(self, schedule: Schedule | None = None, *, k: int = 5, n: int = 2048,
                 tol: float = 1e-3, span: float = 3.0, points: int = 25) -> None:
        super().__init__(schedule)
        for key, value in (("k", k), ("n", n), ("points", points)):
            check_int(self.name, key, value)
        check_number(self.name, "tol", tol, lambda v: 0 < v < 1, "in (0, 1)")
        check_number(self.name, "span", span, lambda v: v > 0, "> 0")
        self.k, self.n, self.tol = k, n, tol
        self.offsets = np.linspace(-span, span, points)
        self.previous: torch.Tensor | None = None
        self._current: torch.Tensor | None = None

    def eig_request(self) -> tuple[int, int, float]:
        return self.k, self.n, self.tol

    def measure(self, ctx: ProbeContext) -> dict:
        res = ctx.top_eigs(self.k, self.n, tol=self.tol, init=self.previous)
        V = res.vectors[: self.k].detach()
        out = {}
        if self.previous is not None:
            previous = self.previous.to(V.device, torch.float64)  # CPU after a resume
            overlap = (previous @ V.double().T).pow(2).sum() / self.k
            out["overlap"] = overlap.item()
        self.previous = V.clone()
        self._current = V
        out["eigenvalues"] = res.values[: self.k].double().cpu().numpy()
        if ctx.batch_grad is None:  # the final measurement: no mini-batch step to project
            return out
        step = (ctx.planned_update if ctx.planned_update is not None
                else -ctx.lr * ctx.batch_grad).to(V.dtype)
        proj = V @ step
        x, y = ctx.subset(self.n)
        bowl = np.stack([
            loss_along(ctx.model, ctx.loss_fn, x, y, V[i] * max(abs(proj[i].item()), 1e-12),
                       self.offsets).cpu().numpy() for i in range(len(V))])
        out.update({"offsets": self.offsets, "bowl": bowl,
                    "step_projection": proj.double().cpu().numpy()})
        return out

    def after_step(self, ctx: ProbeContext) -> dict:
        V, self._current = self._current, None
        if V is None or ctx.update is None:
            return {}
        upd = ctx.update.to(V.dtype)
        comp = V @ upd
        norm = upd.norm()
        frac = (comp.norm() / norm).item() if norm > 0 else 0.0
        return {"update_in_subspace": frac, "update_projection": comp.double().cpu().numpy()}

    def state_dict(self) -> dict:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.previous = state.get("previous")
