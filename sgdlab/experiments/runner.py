"""Running an experiment: train its grid as a sweep, analyze, write the report and checks.

:func:`run_experiment` (see :mod:`sgdlab.experiments.base` for the steps) writes
``<store>/experiments/<name>-<scale>/``: ``report.html`` (self-contained: checks, figures
as inline PNG, configs), ``checks.json`` (checks + metadata), one PNG per figure, and the
checks into the store's index (:meth:`Store.checks`).
"""

from __future__ import annotations

import base64
import html
import json
import platform
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from sgdlab.errors import SgdlabError
from sgdlab.experiments.base import (
    AnalysisContext,
    Check,
    Experiment,
    ExperimentResult,
    build_configs,
)
from sgdlab.experiments.registry import get_experiment

if TYPE_CHECKING:
    from sgdlab.store import Store


def run_experiment(name: str | Experiment, store: Store, scale: str = "smoke",
                   overrides: list[str] | dict = (), workers: int = 0,
                   quiet: bool = False, executor=None) -> ExperimentResult:
    """Train what is missing, analyze, and write the report (see the module docstring).
    ``name`` is a registered experiment's name or an :class:`Experiment` instance;
    ``executor`` an :class:`~sgdlab.sweep.Executor` or its name (``"ensemble"``, ...; see
    :func:`~sgdlab.sweep.make_executor`), else ``workers`` decides as in ``run_sweep``."""
    from sgdlab.sweep import Sweep, run_sweep

    start = time.perf_counter()
    exp = get_experiment(name) if isinstance(name, str) else name
    configs = build_configs(exp, scale, overrides)  # everything validated before any write
    group = f"{exp.name}-{scale}"
    ids: list[str | None] = []
    if configs:  # an experiment may compute everything itself, with no training run
        result = run_sweep(Sweep(group, configs, source=f"experiment {exp.name}"), store,
                           workers=workers, progress=not quiet, executor=executor)
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
