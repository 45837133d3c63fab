"""Helpers the experiments' analyses share: a rank correlation, plain log-axis ticks, and a
JSON cache for computations done outside the runs."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def cached_json(folder: Path, name: str, params: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON-able result, kept in ``folder/<name>-<hash of params>.json``
    (a rerun with the same parameters reads it instead of computing again)."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    path = Path(folder) / f"{name}-{key[:12]}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = compute()
    path.write_text(json.dumps(out))
    return out
