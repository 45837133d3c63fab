"""The experiment framework: a published claim as a grid of runs, an analysis and checks.

An :class:`Experiment` names its runs (:meth:`~Experiment.configs`, one nested config dict
per run, per scale) and reads them back (:meth:`~Experiment.analyze`) into
:class:`Check` rows (claim, measured number, verdict) and figures.
:func:`run_experiment` does the rest:

1. builds the configs, applies ``--set`` overrides to every one (dotted keys, through
   :func:`sgdlab.config.apply_overrides`) and validates all of them; a bad value is one
   :class:`~sgdlab.errors.ConfigError` naming the field, before anything is written;
2. trains them as one sweep (group ``<name>-<scale>``) that skips finished runs and resumes
   killed ones, so a rerun only re-analyzes (an experiment with no configs at a scale,
   one that computes everything in :meth:`~Experiment.analyze`, trains nothing);
3. analyzes the runs of *these* configs (older runs of the group made under other
   overrides are ignored);
4. writes ``<store>/experiments/<name>-<scale>/``: ``report.html`` (self-contained: checks,
   figures as inline PNG, configs), ``checks.json`` (checks + metadata) and one PNG per
   figure, and the checks to the store's index (:meth:`Store.checks`), replacing those of
   the previous run at this scale.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgdlab.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from sgdlab.store import Run, Store

VERDICTS = ("held", "not held", "inconclusive")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Check:
    """One published claim against what the runs measured."""

    claim: str  # the published claim, one sentence, with the threshold used
    measured: str  # the number(s) measured, formatted
    verdict: str  # "held" | "not held" | "inconclusive"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if self.value is not None:
            self.value = float(self.value)


def verdict(ok: bool | None) -> str:
    """``True`` -> "held", ``False`` -> "not held", ``None`` -> "inconclusive"."""
    return "inconclusive" if ok is None else ("held" if ok else "not held")


class Experiment:
    """Subclass, set the class attributes, implement :meth:`configs` and :meth:`analyze`."""

    name: str = ""  # "lr-batch-ratio": registry key, group prefix, output folder
    title: str = ""
    reference: str = ""  # the paper
    summary: str = ""  # one paragraph for the report: what is run and what it shows
    scales: tuple[str, ...] = ("smoke", "paper")  # smoke, cpu, paper: see docs/experiments.md

    def configs(self, scale: str) -> list[dict]:
        """Nested config dicts (RunConfig fields), one per run. The framework sets
        ``group`` and, where missing, a readable ``name``."""
        raise NotImplementedError

    def analyze(self, ctx: AnalysisContext) -> tuple[list[Check], list[tuple[str, Figure]]]:
        """Read the runs through ``ctx``; return the checks and ``(title, Figure)`` pairs."""
        raise NotImplementedError


@dataclass
class AnalysisContext:
    """What :meth:`Experiment.analyze` may read: the store and this experiment's runs.

    ``runs`` has one row per config, in config order (column ``point`` = its index), with
    the run columns and dotted config keys of :meth:`Store.runs`."""

    store: Store
    scale: str
    runs: pd.DataFrame
    out_dir: Path
    configs: list[dict] = field(default_factory=list)  # resolved configs, in order

    def metrics(self, names: list[str] | str | None = None) -> pd.DataFrame:
        """Long metrics (run, step, epoch, name, value) of this experiment's runs."""
        return self.store.metrics(runs=list(self.runs["id"]), names=names)

    def series(self, run_id: str, name: str) -> pd.DataFrame:
        """One run's metric, sorted by step (columns step, epoch, value)."""
        m = self.store.metrics(runs=[run_id], names=[name])
        return m.sort_values("step")[["step", "epoch", "value"]].reset_index(drop=True)

    def final(self, name: str) -> pd.Series:
        """The last logged value of metric ``name`` per run id (NaN where never logged)."""
        m = self.metrics([name]).sort_values("step").groupby("run")["value"].last()
        return m.reindex(self.runs["id"])

    def run(self, run_id: str) -> Run:
        return self.store.get_run(run_id)

    def devices(self, run_id: str) -> set[str]:
        """The devices a run trained on ("cpu", "cuda:0"), one per session. A run without
        an environment record (written before sgdlab kept one) has its configured device,
        or none if that was "auto"."""
        from sgdlab.train.environment import sessions_of

        run = self.run(run_id)
        found = {str(e.get("device")) for e in sessions_of(run)}
        configured = run.config.get("device", "auto")
        return found or ({configured} if configured != "auto" else set())

    @cached_property
    def extra_dir(self) -> Path:
        """A folder for the cache of computations done outside the runs."""
        path = self.out_dir / "extra"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class ExperimentResult:
    name: str
    scale: str
    checks: list[Check]
    html_path: Path
    json_path: Path
    figure_paths: list[Path]
    seconds: float
    run_ids: list[str] = field(default_factory=list)


# -- building configs ---------------------------------------------------------------------
def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}".replace("+", "")
    if isinstance(v, list | dict):
        return hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:6]
    return str(v)


def default_names(group: str, configs: list[dict]) -> list[str]:
    """``<group>_<key>-<value>_...`` from the keys that differ between configs (≤ 80 chars)."""
    flats = [_flat(c) for c in configs]
    keys = sorted({k for f in flats for k in f if k not in ("name", "group")})
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
    names = []
    for i, f in enumerate(flats):
        parts = [f"{k.rsplit('.', 1)[-1]}-{_fmt(f[k])}" for k in varying if k in f]
        name = _UNSAFE.sub("_", "_".join([group, *parts]) if parts else f"{group}_{i}")
        if len(name) > 80:
            name = f"{name[:71]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        names.append(name)
    return names


def build_configs(exp: Experiment, scale: str, overrides: list[str] | dict = ()) -> list:
    """The validated :class:`~sgdlab.config.RunConfig` of every run (ConfigError if bad)."""
    from sgdlab.config import apply_overrides, from_dict, parse_override
    from sgdlab.train.validate import validate

    if scale not in exp.scales:
        raise ConfigError(f"--scale: {scale!r} is not one of {', '.join(exp.scales)}")
    group = f"{exp.name}-{scale}"
    items = dict(overrides) if isinstance(overrides, dict) else dict(
        map(parse_override, overrides))
    for key in items:
        if key.split(".")[0] in ("name", "group"):
            raise ConfigError(f"--set {key}: set by the experiment, cannot be overridden")
    raw = [apply_overrides(c, items) for c in exp.configs(scale)]
    names = default_names(group, raw)
    configs, seen = [], {}
    for i, (data, name) in enumerate(zip(raw, names)):
        data = {**data, "group": group, "name": data.get("name") or name}
        try:
            cfg = validate(from_dict(data))
        except ConfigError as exc:
            raise ConfigError(f"{exc} (experiment {exp.name}, run {i}: {data['name']})") from None
        key = cfg.to_json()
        if key in seen:
            raise ConfigError(f"experiment {exp.name}: runs {seen[key]} and {i} are the same")
        seen[key] = i
        configs.append(cfg)
    return configs
