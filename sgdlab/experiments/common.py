"""Helpers the experiments' analyses share: a rank correlation, plain log-axis ticks, and a
JSON cache for computations done outside the runs."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np


def spearman(x, y) -> float:
    """Spearman rank correlation (NaN with fewer than 3 finite pairs or a constant input)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def plain(ax) -> None:
    """Plain tick labels (%g) on log axes: no 2×10⁰ clutter."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())


def first_reach(x, values, level: float) -> float:
    """The first ``x`` (e.g. epoch) at which ``values`` ≥ ``level``; ``inf`` if never."""
    x, v = np.asarray(x, float), np.asarray(values, float)
    hit = np.flatnonzero(v >= level)
    return float(x[hit[0]]) if len(hit) else math.inf


def mean_spread(values) -> tuple[float, float, float]:
    """(mean, min, max) of the finite values; NaNs if none (inf counts: it is a result)."""
    v = np.asarray([x for x in values if not math.isnan(x)], float)
    if not len(v):
        return math.nan, math.nan, math.nan
    return float(np.mean(v)), float(np.min(v)), float(np.max(v))


def fmt_spread(values, fmt: str = ".3g") -> str:
    """``mean [min, max]`` over seeds, or the single value."""
    mean, lo, hi = mean_spread(values)
    if len([x for x in values if not math.isnan(x)]) <= 1 or lo == hi:
        return format(mean, fmt)
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def load_trained(ctx, run_id: str):
    """``(model, data, loss_fn)`` of a finished run rebuilt from its config and its final
    parameters (``final.safetensors``), on the CPU, model in eval mode
    (:func:`sgdlab.train.restore.restore`)."""
    from sgdlab.train.restore import restore

    return tuple(restore(ctx.run(run_id)))


def cached(ctx, what: str, settings: dict, compute, *, save=None, load=None):
    """``compute()`` once per ``settings`` (JSON-able, e.g. run ids and options), cached in
    ``ctx.extra_dir`` as ``<what>-<hash>.json`` (or ``.npz`` with ``save(value, path)`` /
    ``load(path)``), so rerunning an experiment only re-reads what it computed."""
    from sgdlab.store.files import read_json, write_json

    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    path = Path(ctx.extra_dir) / f"{what}-{key[:12]}.{'npz' if save else 'json'}"
    if path.is_file():
        return load(path) if load else read_json(path, what)
    value = compute()
    if save:
        save(value, path)
    else:
        write_json(path, value)
    return value
