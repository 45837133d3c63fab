"""One validation of a run's config, wherever it enters: every field (:meth:`RunConfig.check`)
and every name that a registry above the config resolves (the model, the dataset and the
loss, built-in or given by import path; the probes and their options; the trackers and
their destinations). A config validated once and not changed since is not checked again,
so a sweep's point is validated when the grid is expanded and travels to its worker as it
is (where the trainer resolves its import paths again, in that process)."""

from __future__ import annotations

import torch

from sgdlab.config import RunConfig
from sgdlab.data import check_data
from sgdlab.errors import ConfigError, first_line
from sgdlab.evaluation import eval_mode
from sgdlab.imports import is_import_path
from sgdlab.losses import check_loss, check_outputs
from sgdlab.models import check_model
from sgdlab.probes import build_probes
from sgdlab.sinks.trackers import check_trackers


def validate(cfg: RunConfig) -> RunConfig:
    """``cfg`` if it is valid (ConfigError naming the first bad field otherwise)."""
    fingerprint = cfg.to_json()
    if cfg.__dict__.get("_validated") == fingerprint:
        return cfg
    cfg.check()
    check_data(cfg.data)
    check_model(cfg.model)
    check_loss(cfg.train.loss)
    build_probes(cfg.probes)
    check_trackers(cfg.trackers)
    cfg.__dict__["_validated"] = fingerprint
    return cfg


def validate_configs(configs: list[RunConfig]) -> list[RunConfig | str]:
    """Per config, the validated config or its ConfigError's message (a sweep validates
    its points at once, in the process that will train them: see
    :meth:`sgdlab.sweep.executors.WorkerProcesses.validate`)."""
    out: list[RunConfig | str] = []
    for cfg in configs:
        try:
            out.append(validate(cfg))
        except ConfigError as exc:
            out.append(str(exc))
    return out


def check_user_code(cfg: RunConfig, model: torch.nn.Module, data) -> None:
    """A model or loss given by import path, tried on two training examples before the run
    is created: outputs ``(2, n_outputs)``, one finite loss per example. Runs in eval mode,
    without gradients, under a forked RNG, so training is unchanged."""
    user_model, user_loss = is_import_path(cfg.model.name), is_import_path(cfg.train.loss)
    if not (user_model or user_loss):
        return
    x, y = data.x_train[:2], data.y_train[:2]
    with torch.random.fork_rng(devices=[]), torch.no_grad(), eval_mode(model):
        try:
            out = model(x)
        except Exception as exc:
            first = first_line(exc)
            raise ConfigError(f"model.name: {cfg.model.name!r} failed on a batch of shape "
                              f"{tuple(x.shape)} ({type(exc).__name__}: {first})") from None
        expected = (len(x), data.n_classes)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                   else f"a {type(out).__name__}")
            raise ConfigError(f"model.name: {cfg.model.name!r} maps a batch of shape "
                              f"{tuple(x.shape)} to {got}; expected a tensor of shape "
                              f"{expected} (examples, outputs)")
        check_outputs(cfg.train.loss, out, y)
