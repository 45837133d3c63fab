"""Weight norms: how far and how fast the parameters move.

With ``theta`` the concatenation of all parameters (``model.parameters()`` order, the layout
of ``ProbeContext.update``):

    norm       = ||theta_t||
    dist_init  = ||theta_t - theta_0||        (theta_0 captured at the start of training)
    update     = ||theta_{t+1} - theta_t||    (from ``ctx.update``, after the optimizer step)
    rel_update = update / ||theta_t||

and with ``per_layer`` the same norms per parameter tensor, as arrays ``layer_norms``,
``layer_dist_init`` and ``layer_update`` in ``model.named_parameters()`` order (names are not
stored: use :func:`layer_names`). Norms are accumulated in float64.

``theta_0`` is kept as one flat copy on the parameters' device, in float32 (float64 for float64
parameters), and saved with the probe's state so a resumed run measures the same distance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sgdlab.probes.base import OptionError, Probe, ProbeContext, Schedule


def flat_parameters(model: nn.Module, dtype: torch.dtype | None = None) -> Tensor:
    """A detached copy of all parameters as one vector (``model.parameters()`` order)."""
    params = list(model.parameters())
    dtype = dtype or torch.promote_types(params[0].dtype, torch.float32)
    return torch.cat([p.detach().reshape(-1).to(dtype) for p in params])


def layer_names(model: nn.Module) -> list[str]:
    """Names of the entries of ``layer_norms`` / ``layer_dist_init``."""
    return [name for name, _ in model.named_parameters()]


def _norms(tensors: list[Tensor]) -> Tensor:
    """Euclidean norm of each tensor, float64, on the CPU (one device sync)."""
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack([torch.linalg.vector_norm(t.detach(), dtype=torch.float64)
                        for t in tensors]).cpu()


def layer_norms(model: nn.Module) -> Tensor:
    """``||theta_l||`` per parameter tensor (float64), ``named_parameters`` order."""
    return _norms(list(model.parameters()))


def parameter_norm(model: nn.Module) -> float:
    """``||theta||``."""
    return float(layer_norms(model).square().sum().sqrt())


def layer_distances(model: nn.Module, theta0: Tensor) -> Tensor:
    """``||theta_l - theta0_l||`` per parameter tensor, ``theta0`` flat as from
    :func:`flat_parameters` (on any device)."""
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    if sum(sizes) != len(theta0):
        raise ValueError(f"theta0 has {len(theta0)} entries, the model {sum(sizes)} parameters")
    refs = torch.split(theta0, sizes)
    return _norms([p.detach() - r.to(p.device).view_as(p) for p, r in zip(params, refs)])


def distance(model: nn.Module, theta0: Tensor) -> float:
    """``||theta - theta0||``."""
    return float(layer_distances(model, theta0).square().sum().sqrt())


class Weights(Probe):
    """Parameter norm, distance from initialization and update size. Scalars ``norm``,
    ``dist_init`` (when ``theta_0`` is known) at ``measure``; ``update``, ``rel_update`` at
    ``after_step``; with ``per_layer`` arrays ``layer_norms``, ``layer_dist_init`` (measure)
    and ``layer_update`` (after_step)."""

    name = "weights"

    def __init__(self, schedule: Schedule | None = None, *, per_layer: bool = False) -> None:
        super().__init__(schedule)
        if not isinstance(per_layer, bool):
            raise OptionError(self.name, "per_layer", per_layer, "true or false")
        self.per_layer = per_layer
        self.theta0: Tensor | None = None
        self._norm: tuple[int, float] | None = None  # (step, ||theta_t||) of the last measure

    def on_train_start(self, ctx: ProbeContext) -> None:
        self.theta0 = flat_parameters(ctx.model)

    def measure(self, ctx: ProbeContext) -> dict:
        model = ctx.model
        out: dict = {}
        if self.per_layer:
            out["layer_norms"] = layer_norms(model)
        out["norm"] = parameter_norm(model)
        self._norm = (ctx.step, out["norm"])
        if self.theta0 is not None:
            device = next(model.parameters()).device
            if self.theta0.device != device:  # after load_state_dict
                self.theta0 = self.theta0.to(device)
            dists = layer_distances(model, self.theta0)
            out["dist_init"] = math.sqrt(float((dists ** 2).sum()))
            if self.per_layer:
                out["layer_dist_init"] = dists
        return out

    def after_step(self, ctx: ProbeContext) -> dict | None:
        if ctx.update is None:
            return None
        update = float(_norms([ctx.update])[0])
        if self._norm is not None and self._norm[0] == ctx.step:
            norm = self._norm[1]
        else:  # no measure at this step: ||theta_t|| = ||theta_{t+1} - update||
            norm = distance(ctx.model, ctx.update)
        out: dict = {"update": update, "rel_update": update / norm if norm > 0 else math.nan}
        if self.per_layer:
            sizes = [p.numel() for p in ctx.model.parameters()]
            out["layer_update"] = _norms(list(torch.split(ctx.update, sizes)))
        return out

    def state_dict(self) -> dict:
        return {} if self.theta0 is None else {"theta0": self.theta0.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.theta0 = state.get("theta0")
