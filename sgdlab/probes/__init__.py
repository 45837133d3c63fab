"""Probes: measurements along training (protocol in :mod:`sgdlab.probes.base`)."""

from __future__ import annotations

from typing import Any

from sgdlab.errors import ConfigError
from sgdlab.probes.base import Probe, ProbeContext, Schedule
from sgdlab.probes.runner import ProbeRunner

PROBES: dict[str, type[Probe]] = {}


def register(cls: type[Probe]) -> type[Probe]:
    """Class decorator adding a probe to the registry under ``cls.name``."""
    PROBES[cls.name] = cls
    return cls


def build_probes(specs: list[dict[str, Any]]) -> list[Probe]:
    """Probes from ``[[probes]]`` config tables: ``name``, schedule keys, probe options."""
    probes = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        name = spec.pop("name")
        if name not in PROBES:
            known = ", ".join(sorted(PROBES))
            raise ConfigError(f"probes[{i}].name: {name!r} is not one of {known}")
        schedule = Schedule.parse(spec, f"probes[{i}]")
        spec.pop("every", None)
        spec.pop("log_points", None)
        try:
            probes.append(PROBES[name](schedule, **spec))
        except TypeError as exc:
            raise ConfigError(f"probes[{i}] ({name}): {exc}") from None
    return probes


# the probes register themselves on import (after ``register`` exists)
from sgdlab.probes import csr, hessian, noise, residual, sharpest, stiffness, weights  # noqa: E402,F401,I001

__all__ = ["PROBES", "Probe", "ProbeContext", "ProbeRunner", "Schedule", "build_probes", "register"]
