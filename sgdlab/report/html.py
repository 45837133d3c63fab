"""A self-contained HTML report of a run: summary table and figures as inline PNG."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from sgdlab.report.figures import RunView, all_figures, render_png
from sgdlab.store import Run, Store

STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}figure{display:inline-block;margin:8px}figcaption{font-weight:600}
pre{background:#f5f5f5;padding:8px;font-size:12px;overflow:auto}"""


def figure_png(fig) -> str:
    return base64.b64encode(render_png(fig)).decode()


def run_view(store: Store, run: Run) -> RunView:
    metrics = store.metrics(runs=[run.id])
    return RunView(run.id, run.config, metrics, run.load_arrays, run.array_names())


def summary_rows(run: Run, view: RunView) -> list[tuple[str, str]]:
    cfg = run.config
    rows = [("run", run.id), ("status", run.status),
            ("data", f"{cfg['data']['name']} (n_train={cfg['data']['n_train'] or 'all'})"),
            ("model", cfg["model"]["name"]),
            ("optimizer", f"{cfg['optim']['name']} lr={cfg['optim']['lr']} "
                          f"batch={cfg['optim']['batch_size'] or 'full'} "
                          f"momentum={cfg['optim']['momentum']}"),
            ("loss", cfg["train"]["loss"])]
    for name in ("n_params", "train/loss", "train/acc", "test/loss", "test/acc"):
        s = view.series(name)
        if not s.empty:
            rows.append((f"final {name}" if "/" in name else name, f"{s['value'].iloc[-1]:.6g}"))
    return rows


def write_report(store: Store, run_id: str, path: str | Path | None = None) -> Path:
    """Render the report of ``run_id`` to ``path`` (default ``<run folder>/report.html``)."""
    run = store.get_run(run_id)
    view = run_view(store, run)
    parts = [f"<!doctype html><meta charset=utf-8><title>sgdlab {html.escape(run.id)}</title>",
             f"<style>{STYLE}</style><h1>{html.escape(run.id)}</h1><table>"]
    parts += [f"<tr><th>{html.escape(k)}<td>{html.escape(v)}" for k, v in summary_rows(run, view)]
    parts.append("</table>")
    for title, fig in all_figures(view):
        parts.append(f"<figure><figcaption>{html.escape(title)}</figcaption>"
                     f"<img src='data:image/png;base64,{figure_png(fig)}'></figure>")
    parts.append("<h2>Configuration</h2><pre>"
                 + html.escape(json.dumps(run.config, indent=2, sort_keys=True)) + "</pre>")
    path = Path(path) if path else run.path / "report.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path
