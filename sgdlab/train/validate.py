"""One validation of a run's config, wherever it enters: every field (:meth:`RunConfig.check`)
and every name that a registry above the config resolves (the model, the probes and their
options). A config validated once and not changed since is not checked again, so a sweep's
point is validated when the grid is expanded and travels to its worker as it is."""

from __future__ import annotations

from sgdlab.config import RunConfig
from sgdlab.models import check_model
from sgdlab.probes import build_probes


def validate(cfg: RunConfig) -> RunConfig:
    """``cfg`` if it is valid (ConfigError naming the first bad field otherwise)."""
    fingerprint = cfg.to_json()
    if cfg.__dict__.get("_validated") == fingerprint:
        return cfg
    cfg.check()
    check_model(cfg.model)
    build_probes(cfg.probes)
    cfg.__dict__["_validated"] = fingerprint
    return cfg
