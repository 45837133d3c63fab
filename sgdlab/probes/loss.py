"""Loss and accuracy as a probe: train, test, and the clean and corrupted training examples.

The trainer evaluates on its own cadence (``train.eval_every``); this probe measures the
same quantities (:func:`sgdlab.evaluation.evaluate`, eval mode, no gradients) on a
probe schedule — log-spaced steps to resolve the early trajectory — or in a loop of one's
own. Metrics ``loss/<split>/<loss|acc>``, with splits ``train``, ``test`` and, with a
corruption, ``clean``, ``corrupted`` (and ``corrupted/acc_true``, against original labels).
"""

from __future__ import annotations

from sgdlab.evaluation import evaluate
from sgdlab.probes.base import Probe, ProbeContext, Schedule, check_int


class LossProbe(Probe):
    """Loss and accuracy on every split (see module docstring)."""

    name = "loss"

    def __init__(self, schedule: Schedule | None = None, *, batch_size: int = 0) -> None:
        super().__init__(schedule)
        check_int(self.name, "batch_size", batch_size, 0)  # 0: by device, as the trainer
        self.batch_size = batch_size

    def measure(self, ctx: ProbeContext) -> dict:
        return evaluate(ctx.model, ctx.loss, ctx.data, self.batch_size)
