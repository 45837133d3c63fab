"""Nudged SGD (Jastrzębski et al., "On the Relation Between the Sharpest Directions of DNN
Loss and the SGD Step Length", ICLR 2019).

The mini-batch gradient ``g`` is split into its component inside the top-K Hessian
eigenspace ``V`` (orthonormal columns, refreshed every ``every`` steps or every epoch) and
the rest, and the first is multiplied by ``gamma``::

    g' = g + (gamma - 1) V V^T g

then an ordinary SGD step (momentum, Nesterov, weight decay as ``torch.optim.SGD``) is
taken with ``g'``; with momentum, the velocity therefore accumulates nudged gradients.
Weight decay is added to ``g'`` by SGD, i.e. it is not nudged. ``gamma = 1`` is exactly SGD.
"""

from __future__ import annotations

import torch


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

    def refresh(self, ctx) -> None:
        """Recompute the top-``k`` eigenvectors on the fixed subset, warm-started from the
        previous basis; the result is shared with probes through ``ctx``."""
        result = ctx.top_eigs(self.k, self.subset, tol=self.tol, init=self.basis,
                              generator=self.generator)
        q, _ = torch.linalg.qr(result.vectors.T.to(torch.float64))
        self.basis = q.T.to(result.vectors.dtype)

    def set_basis(self, vectors: torch.Tensor) -> None:
        """Use the given (k, P) directions (orthonormalized) as the nudged subspace."""
        q, _ = torch.linalg.qr(vectors.T.to(torch.float64))
        self.basis = q.T.to(vectors.dtype)

    @torch.no_grad()
    def step(self, closure=None):
        if self.basis is not None:
            params = [p for group in self.param_groups for p in group["params"]]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            basis = self.basis.to(flat.device, flat.dtype)
            nudged = flat + (self.gamma - 1.0) * (basis.T @ (basis @ flat))
            offset = 0
            for p, g in zip(params, grads):
                n = g.numel()
                if p.grad is not None:
                    p.grad.copy_(nudged[offset : offset + n].view_as(g))
                offset += n
        return super().step(closure)

    def state_dict(self):
        state = super().state_dict()
        state["nsgd"] = {"basis": self.basis, "generator": self.generator.get_state()}
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("nsgd", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.basis = extra["basis"]
            self.generator.set_state(extra["generator"])
