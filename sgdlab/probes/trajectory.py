"""A run's thinned parameter history: the flat parameters θ_t on the probe's schedule.

At every due step (and once more at the end, at the final parameters) the probe returns

    theta = θ_t    (the trainable parameters, ``named_parameters`` order, flattened)

as the array ``theta``, so the trainer stores ``arrays/trajectory/<step>.npz`` in the run
folder (deflate-compressed by the store). That is the layout of a point of
:mod:`sgdlab.landscape`: ``trajectory_pca`` and ``colander_points`` take the stacked
history directly. ``dtype="float16"`` halves the size (relative rounding 2⁻¹¹ ≈ 5e-4 of
each weight, invisible on a trajectory plot and on the loss at the point); the store's
compression saves another ~8% (trained weights are nearly incompressible). A history of
T points of P parameters takes about T · P · 2 bytes in float16, 4 in float32; every 50
steps over 5,000 steps of a 270k-parameter MLP: 101 points, 55 MB in float16.

``sgdlab landscape RUN trajectory`` reports the stored size and draws the trajectory on
its principal plane over the loss (Li et al., NeurIPS 2018).
"""

from __future__ import annotations

import torch

from sgdlab.probes.base import OptionError, Probe, ProbeContext, Schedule

DTYPES = ("float16", "float32", "float64")


def trainable_vector(model: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The trainable parameters (``requires_grad``), flattened in ``named_parameters``
    order, as a CPU tensor of ``dtype``."""
    return torch.cat([p.detach().reshape(-1).to("cpu", dtype)
                      for _, p in model.named_parameters() if p.requires_grad])


class Trajectory(Probe):
    """The flat trainable parameters at every due step: array ``theta`` (``dtype``)."""

    name = "trajectory"

    def __init__(self, schedule: Schedule | None = None, *, dtype: str = "float32") -> None:
        super().__init__(schedule)
        if dtype not in DTYPES:
            raise OptionError(self.name, "dtype", dtype, f"one of {', '.join(DTYPES)}")
        self.dtype = dtype

    def measure(self, ctx: ProbeContext) -> dict:
        return {"theta": trainable_vector(ctx.model, getattr(torch, self.dtype))}
