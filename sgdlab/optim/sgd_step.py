"""The step ``torch.optim.SGD`` takes, as tensors: shared by Nudged SGD (which rescales it
before applying it) and by the trainer (which hands the step about to be taken to probes).

For each parameter p with gradient g, SGD (heavy-ball, dampening τ, weight decay λ) forms

    d = g + λ p,    b ← β b + (1 − τ) d   (b = d at the first step),
    p ← p − η s,    s = b  (heavy-ball)  or  s = d + β b  (Nesterov),

exactly as ``torch.optim.SGD(foreach=False)`` does, so applying ``p.add_(s, alpha=-η)``
reproduces it bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sgd_steps(opt: torch.optim.SGD, commit: bool) -> list[tuple[Tensor, Tensor, float]]:
    """``(p, s, η)`` for every parameter with a gradient (the update is p ← p − η s).

    ``commit=True`` advances the momentum buffers as ``opt.step()`` would; ``commit=False``
    leaves the optimizer untouched (a preview of the next step)."""
    out = []
    for group in opt.param_groups:
        wd, beta, damp = group["weight_decay"], group["momentum"], group["dampening"]
        for p in group["params"]:
            if p.grad is None:
                continue
            d = -p.grad if group.get("maximize", False) else p.grad
            if wd != 0:
                d = d.add(p, alpha=wd)
            s = d
            if beta != 0:
                state = opt.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = d.detach().clone()
                    if commit:
                        state["momentum_buffer"] = buf
                elif commit:
                    buf.mul_(beta).add_(d, alpha=1 - damp)
                else:
                    buf = buf.mul(beta).add(d, alpha=1 - damp)
                s = d.add(buf, alpha=beta) if group["nesterov"] else buf
            out.append((p, s, group["lr"]))
    return out


@torch.no_grad()
def planned_update(opt: torch.optim.Optimizer, params: list[Tensor]) -> Tensor | None:
    """The flat update θ_{t+1} − θ_t the optimizer's next ``step()`` will make to ``params``
    (zeros for those without a gradient), without taking it; None for an optimizer other
    than SGD. Nudged SGD's preview includes its rescaling."""
    if not isinstance(opt, torch.optim.SGD):
        return None
    preview = getattr(opt, "preview", None)
    steps = preview() if preview is not None else sgd_steps(opt, commit=False)
    by_param = {id(p): -lr * s for p, s, lr in steps}
    return torch.cat([by_param.get(id(p), torch.zeros_like(p)).reshape(-1) for p in params])
