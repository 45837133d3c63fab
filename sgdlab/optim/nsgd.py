"""Nudged SGD (Jastrzębski et al., "On the Relation Between the Sharpest Directions of DNN
Loss and the SGD Step Length", ICLR 2019).

At each step SGD's update direction s (the gradient plus weight decay; with momentum, the
velocity: heavy-ball or Nesterov, see :mod:`sgdlab.optim.sgd_step`) is split into its
component inside the top-K Hessian eigenspace ``V`` (orthonormal rows, refreshed every
``every`` steps or every epoch) and the rest, and the first is multiplied by ``gamma``::

    θ ← θ − η (s + (gamma − 1) Vᵀ V s)

The momentum buffer itself is plain SGD's: the rescaling applies to the velocity at the
step, under the current subspace, so a refresh does not leave components scaled for an
old subspace in the buffer. With momentum 0 this rescales the gradient. ``gamma = 1`` is
exactly SGD (bit for bit).
"""

from __future__ import annotations

import torch

from sgdlab.curvature.shared import SharedEigs
from sgdlab.optim.sgd_step import sgd_steps


class NSGD(torch.optim.SGD):
    """SGD whose gradient is rescaled by ``gamma`` inside the top-``k`` Hessian subspace."""

    def __init__(self, params, *, gamma: float, k: int, every: int = 0, subset: int = 2048,
                 tol: float = 1e-3, **sgd_kwargs):
        super().__init__(params, foreach=False, **sgd_kwargs)
        self.gamma, self.k, self.every, self.subset, self.tol = gamma, k, every, subset, tol
        self.basis: torch.Tensor | None = None  # (k, P) orthonormal rows
        self.generator = torch.Generator().manual_seed(20190501)

    def wants_refresh(self, step: int, epoch_start: bool) -> bool:
        if self.basis is None:
            return True
        return step % self.every == 0 if self.every else epoch_start

    def refresh(self, eigs: SharedEigs) -> None:
        """Recompute the top-``k`` eigenvectors on the fixed subset, warm-started from the
        previous basis; the result is shared with the probes of the step through ``eigs``."""
        result = eigs.top(self.k, self.subset, tol=self.tol, init=self.basis,
                          generator=self.generator)
        self.set_basis(result.vectors[: self.k])

    def set_basis(self, vectors: torch.Tensor) -> None:
        """Use the given (k, P) directions (orthonormalized) as the nudged subspace."""
        q, _ = torch.linalg.qr(vectors.T.to(torch.float64))
        self.basis = q.T.to(vectors.dtype)

    def preview(self) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """The (p, s', η) of the next step without taking it (see ``sgd_steps``)."""
        return self._nudge(sgd_steps(self, commit=False))

    def _nudge(self, steps):
        """Rescale the steps' component in the basis; the basis is over all trainable
        parameters in order, those without a gradient (unused) taking no step."""
        if self.basis is None or not steps:
            return steps
        by_param = {id(p): s for p, s, _ in steps}
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        flat = torch.cat([by_param.get(id(p), torch.zeros_like(p)).reshape(-1) for p in params])
        basis = self.basis.to(flat.device, flat.dtype)
        nudged = flat + (self.gamma - 1.0) * (basis.T @ (basis @ flat))
        pieces = dict(zip(map(id, params), torch.split(nudged, [p.numel() for p in params])))
        return [(p, pieces[id(p)].view_as(s), lr) for p, s, lr in steps]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for p, s, lr in self._nudge(sgd_steps(self, commit=True)):
            p.add_(s, alpha=-lr)
        return loss

    def state_dict(self):
        state = super().state_dict()
        state["nsgd"] = {"basis": self.basis, "generator": self.generator.get_state()}
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("nsgd", None)
        super().load_state_dict(state_dict)
        if extra is not None:  # checkpoints load on the CPU: the basis joins the parameters
            basis, device = extra["basis"], self.param_groups[0]["params"][0].device
            self.basis = None if basis is None else basis.to(device)
            self.generator.set_state(extra["generator"])
