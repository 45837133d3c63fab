"""Probes: measurements along training (protocol in :mod:`sgdlab.probes.base`)."""

from __future__ import annotations

import inspect
import typing
from typing import Any

from sgdlab.config import coerce
from sgdlab.errors import ConfigError
from sgdlab.probes.base import OptionError, Probe, ProbeContext, Schedule
from sgdlab.probes.csr import CriticalSampleRatio
from sgdlab.probes.hessian import HessianDensityProbe, HessianProbe
from sgdlab.probes.loss import LossProbe
from sgdlab.probes.noise import GradientNoiseProbe
from sgdlab.probes.residual import ResidualInference
from sgdlab.probes.runner import ProbeRunner
from sgdlab.probes.sharpest import SharpestProbe
from sgdlab.probes.stiffness import Stiffness
from sgdlab.probes.trajectory import Trajectory
from sgdlab.probes.weights import Weights

PROBES: dict[str, type[Probe]] = {
    cls.name: cls
    for cls in (
        LossProbe,
        HessianProbe,
        HessianDensityProbe,
        GradientNoiseProbe,
        SharpestProbe,
        CriticalSampleRatio,
        Stiffness,
        ResidualInference,
        Weights,
        Trajectory,
    )
}


def register(cls: type[Probe]) -> type[Probe]:
    """Make ``[[probes]] name = cls.name`` build ``cls`` (a :class:`Probe` subclass of one's
    own; the probes sgdlab ships are listed in :data:`PROBES` above)."""
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"register() takes a Probe subclass, got {cls!r}")
    PROBES[cls.name] = cls
    return cls


def build_probes(specs: list[dict[str, Any]]) -> list[Probe]:
    """Probes from ``[[probes]]`` config tables: ``name``, schedule keys, probe options.

    Options are checked against the keyword parameters of the probe's ``__init__``
    (unknown keys, and values that do not match an ``int``/``float``/``bool``/``str``
    annotation, with the config's own rules); the probe checks ranges. Every error names
    the field, e.g. ``probes[0].k``."""
    probes = []
    for i, spec in enumerate(specs):
        where = f"probes[{i}]"
        spec = dict(spec)
        name = spec.pop("name")
        if name not in PROBES:
            known = ", ".join(sorted(PROBES))
            raise ConfigError(f"{where}.name: {name!r} is not one of {known}")
        schedule = Schedule.parse(spec, where)
        spec.pop("every", None)
        spec.pop("log_points", None)
        options = _typed_options(PROBES[name], spec, where)
        try:
            probes.append(PROBES[name](schedule, **options))
        except OptionError as exc:
            raise ConfigError(f"{where}.{exc.option}: {exc.problem}") from None
    return probes


def _typed_options(cls: type[Probe], spec: dict[str, Any], where: str) -> dict[str, Any]:
    """``spec`` checked against ``cls.__init__``: known keys, values of the annotated type."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return spec  # the probe takes any options and checks them itself
    hints = typing.get_type_hints(cls.__init__)
    known = [n for n, p in params.items() if n not in ("self", "schedule")
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    options = {}
    for key, value in spec.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown option of probe {cls.name} "
                              f"(known: {', '.join(['every', 'log_points', *known])})")
        hint = hints.get(key)
        options[key] = coerce(f"{where}.{key}", value, hint) if hint in (
            bool, int, float, str) else value
    return options

__all__ = ["PROBES", "Probe", "ProbeContext", "ProbeRunner", "Schedule", "build_probes", "register"]
