"""Helpers the experiments' analyses share: a rank correlation and plain log-axis ticks."""

from __future__ import annotations

import math

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
