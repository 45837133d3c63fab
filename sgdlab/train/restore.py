"""Rebuilding a stored run: its model at stored weights, its data and its loss.

What an analysis of a finished run needs (a landscape slice, stiffness on test pairs, a
curve between two runs) is the run's own model, data and loss function, rebuilt from its
resolved config exactly as the trainer built them (the same data subset, corruption and
normalization from the run's seed), with the parameters of ``final.safetensors`` or of a
checkpoint. This needs the trainer's knowledge of configs, so it lives here and not in
``sgdlab.landscape`` or ``sgdlab.report``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sgdlab.config import RunConfig, from_dict
from sgdlab.data import DataBundle, load_data
from sgdlab.errors import SgdlabError
from sgdlab.losses import make_loss
from sgdlab.models import build_model
from sgdlab.store import Run


@dataclass
class RestoredRun:
    """A stored run rebuilt: ``model`` (eval mode) at the weights of ``step``."""

    run: Run
    config: RunConfig
    model: nn.Module
    data: DataBundle
    loss_fn: object
    step: int | None  # the training step of the weights (None if the run logged none)

    def __iter__(self):  # model, data, loss_fn = restore(run)
        return iter((self.model, self.data, self.loss_fn))


def final_step(run: Run) -> int | None:
    """The last step the run logged a metric at (its final step once finished)."""
    m = run.metrics()
    return None if m.empty else int(m["step"].max())


def restore(run: Run, weights: str | int = "final", device: str | torch.device = "cpu"
            ) -> RestoredRun:
    """``run`` rebuilt on ``device`` with the weights ``"final"`` (``final.safetensors``,
    written when the run finished), those of the checkpoint at step ``weights``, or
    ``"init"``: the initialization θ₀ the trainer drew (``torch.manual_seed(seed)`` before
    building the model; the global RNG is left as it was). A run without the weights asked
    for is one :class:`~sgdlab.errors.SgdlabError` line naming it."""
    cfg = from_dict(run.config)
    dtype = getattr(torch, cfg.dtype)
    if weights == "init":
        data = load_data(cfg.data, cfg.seed, device, dtype)
        with torch.random.fork_rng(devices=[]):  # the trainer's initialization, RNG untouched
            torch.manual_seed(cfg.seed)
            model = build_model(cfg.model, data.input_shape, data.n_classes)
        return RestoredRun(run, cfg, model.to(device, dtype).eval(), data,
                           make_loss(cfg.train.loss), 0)
    if weights == "final":
        if not (run.path / "final.safetensors").is_file():
            raise SgdlabError(f"run {run.id} has no stored weights (final.safetensors): it is "
                              f"{run.status}; only a finished run can be analyzed")
        state, step = run.load_tensors("final"), final_step(run)
    elif isinstance(weights, int) and not isinstance(weights, bool):
        if weights not in run.checkpoint_steps():
            have = ", ".join(map(str, run.checkpoint_steps())) or "none"
            raise SgdlabError(f"run {run.id} has no checkpoint at step {weights} (has: {have})")
        state, step = run.load_checkpoint(weights)["model"], weights
    else:
        raise SgdlabError(f"weights: 'final', 'init' or a checkpoint step, got {weights!r}")
    data = load_data(cfg.data, cfg.seed, device, dtype)
    model = build_model(cfg.model, data.input_shape, data.n_classes).to(device, dtype)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v
                           for k, v in state.items()})
    return RestoredRun(run, cfg, model.eval(), data, make_loss(cfg.train.loss), step)
