"""The experiment framework: a published claim as a grid of runs, an analysis and checks.

An :class:`Experiment` names its runs (:meth:`~Experiment.configs`, one nested config dict
per run, per scale) and reads them back (:meth:`~Experiment.analyze`) into
:class:`Check` rows (claim, measured number, verdict) and figures.
:func:`run_experiment` does the rest:

1. builds the configs, applies ``--set`` overrides to every one (dotted keys, through
   :func:`sgdlab.config.apply_overrides`) and validates all of them; a bad value is one
   :class:`~sgdlab.errors.ConfigError` naming the field, before anything is written;
2. trains them as one sweep (group ``<name>-<scale>``) that skips finished runs and resumes
   killed ones, so a rerun only re-analyzes;
3. analyzes the runs of *these* configs (older runs of the group made under other
   overrides are ignored);
4. writes ``<store>/experiments/<name>-<scale>/``: ``report.html`` (self-contained: checks,
   figures as inline PNG, configs), ``checks.json`` (checks + metadata) and one PNG per
   figure, and the checks to the store's index (:meth:`Store.checks`), replacing those of
   the previous run at this scale.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgdlab.errors import ConfigError, SgdlabError

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
    scales: tuple[str, ...] = ("smoke", "paper")

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
    from sgdlab.probes import build_probes

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
            cfg = from_dict(data).check()
            build_probes(cfg.probes)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (experiment {exp.name}, run {i}: {data['name']})") from None
        key = cfg.to_json()
        if key in seen:
            raise ConfigError(f"experiment {exp.name}: runs {seen[key]} and {i} are the same")
        seen[key] = i
        configs.append(cfg)
    return configs


# -- running -------------------------------------------------------------------------------
def get_experiment(name: str) -> Experiment:
    from sgdlab.experiments import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise SgdlabError(f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})")
    return EXPERIMENTS[name]


def run_experiment(name: str, store: Store, scale: str = "smoke", overrides: list[str] | dict = (),
                   workers: int = 0, quiet: bool = False) -> ExperimentResult:
    """Train what is missing, analyze, and write the report (see the module docstring)."""
    from sgdlab.sweep import Sweep, run_sweep

    start = time.perf_counter()
    exp = get_experiment(name)
    configs = build_configs(exp, scale, overrides)  # everything validated before any write
    group = f"{exp.name}-{scale}"
    result = run_sweep(Sweep(group, configs, source=f"experiment {exp.name}"), store,
                       workers=workers, progress=not quiet)
    if not result.finished + result.diverged + result.skipped:
        first = next((m for m in result.messages if m), "no runs")
        raise SgdlabError(f"experiment {exp.name}: every run failed; the first: {first}")
    ids = list(result.run_ids)
    point = {run_id: i for i, run_id in enumerate(ids) if run_id}
    frame = store.runs(group=group)
    frame = frame[frame["id"].isin(point)].copy()
    frame.insert(0, "point", frame["id"].map(point))
    frame = frame.sort_values("point").reset_index(drop=True)
    out_dir = store.root / "experiments" / group
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = AnalysisContext(store, scale, frame, out_dir, [c.to_dict() for c in configs])
    checks, figures = exp.analyze(ctx)
    seconds = time.perf_counter() - start
    shown = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(
        overrides)
    meta = _metadata(exp, scale, shown, frame, seconds)
    html_path, json_path, pngs = _write_outputs(exp, out_dir, meta, checks, figures, ctx)
    store.write_checks(exp.name, scale, checks)
    return ExperimentResult(exp.name, scale, checks, html_path, json_path, pngs, seconds,
                            [i for i in ids if i])


def _metadata(exp: Experiment, scale: str, overrides: list, runs, seconds: float) -> dict:
    import torch

    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"cpu ({platform.processor() or platform.machine()})")
    return {"experiment": exp.name, "title": exp.title, "reference": exp.reference,
            "scale": scale, "overrides": overrides, "n_runs": len(runs),
            "statuses": runs["status"].value_counts().to_dict() if len(runs) else {},
            "run_ids": list(runs["id"]), "seconds": round(seconds, 2),
            "torch": torch.__version__, "device": device, "threads": torch.get_num_threads()}


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "figure"


def _write_outputs(exp, out_dir: Path, meta: dict, checks: list[Check], figures, ctx):
    from sgdlab.report.figures import render_png
    from sgdlab.store.files import write_bytes, write_json

    pngs, used, encoded = [], set(), []
    for title, fig in figures:
        name = base = slug(title)
        n = 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        path = out_dir / f"{name}.png"
        png = render_png(fig)  # rendered once: file and inline copy
        write_bytes(path, png)
        pngs.append(path)
        encoded.append((title, base64.b64encode(png).decode()))
    for stale in out_dir.glob("*.png"):
        if stale not in pngs:
            stale.unlink()
    meta = {**meta, "figures": [p.name for p in pngs]}
    json_path = out_dir / "checks.json"
    write_json(json_path, {**meta, "checks": [asdict(c) for c in checks]})
    html_path = out_dir / "report.html"
    write_bytes(html_path, render_html(exp, meta, checks, encoded, ctx).encode())
    return html_path, json_path, pngs


_COLORS = {"held": "#d8f0d8", "not held": "#f6d5d5", "inconclusive": "#eeeeee"}
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}figure{display:inline-block;margin:8px}
figcaption{font-weight:600}pre{background:#f5f5f5;padding:8px;font-size:12px;overflow:auto}"""


def render_html(exp: Experiment, meta: dict, checks: list[Check], figures, ctx) -> str:
    e = html.escape
    p = [f"<!doctype html><meta charset=utf-8><title>{e(exp.title or exp.name)}</title>",
         f"<style>{_STYLE}</style><h1>{e(exp.title or exp.name)}</h1>",
         f"<p><i>{e(exp.reference)}</i></p>"]
    if exp.summary:
        p.append(f"<p>{e(exp.summary)}</p>")
    p.append(f"<p>scale <b>{e(meta['scale'])}</b>, {meta['n_runs']} runs "
             f"({e(', '.join(f'{v} {k}' for k, v in meta['statuses'].items()))}), "
             f"{meta['seconds']:.1f} s, torch {e(meta['torch'])} on {e(meta['device'])}"
             + (f", overrides {e(' '.join(meta['overrides']))}" if meta["overrides"] else "")
             + "</p><h2>Checks</h2><table><tr><th>claim<th>measured<th>verdict")
    for c in checks:
        p.append(f"<tr><td>{e(c.claim)}<td>{e(c.measured)}"
                 f"<td style='background:{_COLORS[c.verdict]}'>{e(c.verdict)}")
    p.append("</table><h2>Figures</h2>")
    p += [f"<figure><figcaption>{e(t)}</figcaption><img src='data:image/png;base64,{png}'>"
          "</figure>" for t, png in figures]
    p.append("<h2>Runs</h2><table><tr><th>#<th>run<th>status")
    for _, r in ctx.runs.iterrows():
        p.append(f"<tr><td>{r['point']}<td>{e(str(r['id']))}<td>{e(str(r['status']))}")
    p.append("</table><h2>Configurations</h2>")
    for cfg in ctx.configs:
        p.append(f"<details><summary>{e(cfg['name'])}</summary><pre>"
                 f"{e(json.dumps(cfg, indent=2, sort_keys=True))}</pre></details>")
    return "\n".join(p)


def format_checks(checks: list[Check]) -> str:
    """A plain-text table of the checks (verdict, claim, measured)."""
    width = max((len(c.verdict) for c in checks), default=7)
    return "\n".join(f"{c.verdict:<{width}}  {c.claim}\n{'':<{width}}    -> {c.measured}"
                     for c in checks)
