"""A sweep's runs as one table: swept parameters against final (or best) metrics.

A sweep is the group of runs named after it; its *swept parameters* are the dotted config
keys whose values differ between the group's runs (``name`` aside), found from the stored
configs, so the table works without the grid file.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sgdlab.errors import SgdlabError
from sgdlab.store import Store
from sgdlab.store.store import RUN_FRAME_COLUMNS

AGGREGATES = ("last", "min", "max")


def _group_runs(store: Store, name: str) -> pd.DataFrame:
    runs = store.runs(group=name)
    if runs.empty:
        raise SgdlabError(f"no runs in sweep {name!r} in {store.root}")
    return runs


def _same(value: Any) -> str:
    """A hashable stand-in for comparing config values (lists, NaN for a missing key)."""
    if isinstance(value, float) and math.isnan(value):
        return "<missing>"
    return json.dumps(value, sort_keys=True, default=str)


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """Dotted config keys of ``store.runs()`` rows whose values differ between rows, in
    config order with ``seed`` last (as the innermost axis of a grid)."""
    params = [c for c in runs.columns if c not in RUN_FRAME_COLUMNS
              and c not in ("config.name", "config.group")]
    swept = [c for c in params if len({_same(v) for v in runs[c]}) > 1]
    return sorted(swept, key=lambda c: c == "seed")


def _sort_key(row: Sequence[Any]) -> tuple:
    return tuple((0, float(v), "") if isinstance(v, numbers.Real) and not isinstance(v, bool)
                 and not math.isnan(v) else (1, 0.0, _same(v)) for v in row)


def sweep_table(store: Store, name: str, metrics: Sequence[str] = ("train/loss", "test/acc"),
                at: str = "last") -> pd.DataFrame:
    """One row per run of sweep ``name``: run, name, status, the swept parameters, and each
    metric's value at the last step (``at="last"``) or its ``"min"`` / ``"max"`` over
    training. A metric a run never logged is NaN. Rows are sorted by the swept values."""
    if at not in AGGREGATES:
        raise ValueError(f"at must be one of {', '.join(AGGREGATES)}, not {at!r}")
    runs = _group_runs(store, name)
    swept = swept_keys(runs)
    table = runs[["id", "name", "status", *swept]].rename(columns={"id": "run"}).copy()
    m = store.metrics(group=name, names=list(metrics))
    if at == "last":
        values = m.sort_values("step").groupby(["run", "name"]).tail(1)
        values = values.set_index(["run", "name"])["value"]
    else:
        values = m.groupby(["run", "name"])["value"].agg(at)
    wide = values.unstack("name") if not values.empty else pd.DataFrame(index=pd.Index([]))
    for metric in metrics:
        column = wide[metric] if metric in wide.columns else pd.Series(dtype="float64")
        table[metric] = table["run"].map(column).astype("float64")
    order = sorted(range(len(table)),
                   key=lambda i: _sort_key([*table[swept].iloc[i], table["run"].iloc[i]]))
    return table.iloc[order].reset_index(drop=True)


def sweep_curves(store: Store, name: str, metric: str, label: str = "run") -> pd.DataFrame:
    """``metric`` of every run of sweep ``name``, wide: one row per step, one column per
    run (its id, or its name with ``label="name"``); NaN where a run has no value."""
    if label not in ("run", "name"):
        raise ValueError(f"label must be 'run' or 'name', not {label!r}")
    runs = _group_runs(store, name)
    m = store.metrics(group=name, names=[metric])
    if m.empty:
        raise SgdlabError(f"no values of metric {metric!r} in sweep {name!r}")
    wide = m.pivot(index="step", columns="run", values="value")
    ids = [r for r in runs["id"] if r in wide.columns]
    wide = wide[ids]
    if label == "name":
        wide.columns = runs.set_index("id").loc[ids, "name"].to_list()
    wide.columns.name = label
    return wide
