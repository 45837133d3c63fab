"""The store: a folder of runs and its SQLite index, safe to share between processes."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgdlab.store import files
from sgdlab.store.errors import StoreError
from sgdlab.store.index import CHECK_COLUMNS, Index, config_hash, flatten, metrics_frame
from sgdlab.store.run import Run, now

if TYPE_CHECKING:
    import pandas as pd

RUN_FRAME_COLUMNS = ["id", "name", "group", "status", "created", "updated", "diverged_step",
                     "message", "config_hash"]


def _run_columns(row) -> dict[str, Any]:
    """The :data:`RUN_FRAME_COLUMNS` of one index row."""
    return {"id": row["id"], "name": row["name"], "group": row["grp"], "status": row["status"],
            "created": row["created"], "updated": row["updated"],
            "diverged_step": row["diverged_step"], "message": row["message"],
            "config_hash": row["config_hash"]}


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    return [value] if isinstance(value, str) else None if value is None else list(value)


def _sanitize(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)).lstrip(".-")[:100]
    return safe or "run"


class Store:
    """Runs under ``root`` (default ``$SGDLAB_STORE``, else ``./sgdlab-runs``).

    Nothing is created on disk before the first write (``create_run``)."""

    def __init__(self, root: str | Path | None = None):
        if root is None:
            root = os.environ.get("SGDLAB_STORE") or "sgdlab-runs"
        self.root = Path(root).expanduser().absolute()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: is a file, not a store folder (--store, "
                             "$SGDLAB_STORE)")
        self._index = Index(self.root / "index.sqlite")

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def close(self) -> None:
        """Close this thread's index connection (reopened on next use)."""
        self._index.close()

    # -- runs -------------------------------------------------------------------------
    def create_run(self, config: dict, *, name: str, group: str | None = None) -> Run:
        """Register a new run (status ``running``) and write its ``config.json``.

        The id is ``<name>-<UTC YYYYmmdd-HHMMSS>-<4 hex>`` (name reduced to ``[A-Za-z0-9_.-]``);
        ``config_hash`` is the sha256 of the config's JSON with sorted keys. Timestamps in
        the index are UTC ISO 8601."""
        if not isinstance(config, dict):
            raise TypeError(f"config of run {name!r} must be a dict, not {type(config).__name__}")
        try:
            config_json = json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"config of run {name!r} is not JSON-serializable: {exc}") from exc
        resolved = json.loads(config_json)
        stamp = now()
        row = {"name": str(name), "grp": group, "status": "running", "config_json": config_json,
               "config_hash": config_hash(resolved),
               "created": stamp, "updated": stamp}
        prefix = _sanitize(name)

        def make_id() -> str:
            return f"{prefix}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"

        row["id"] = self._index.insert_run(make_id, row, flatten(resolved))
        run = Run(self._index, self.root, row)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            files.write_bytes(run.path / "config.json",
                              (json.dumps(resolved, indent=2) + "\n").encode())
        except BaseException:
            self._index.delete_run(run.id)
            raise
        return run

    def get_run(self, run_id: str | Run) -> Run:
        """The run with this id or unique id prefix."""
        key = run_id.id if isinstance(run_id, Run) else str(run_id)
        rows = self._index.lookup(key) if key else []
        if not rows:
            raise StoreError(f"no run '{key}' in {self.root}")
        if len(rows) > 1:
            shown = ", ".join(r["id"] for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
            raise StoreError(f"run prefix '{key}' is ambiguous in {self.root}: {shown}")
        return Run(self._index, self.root, rows[0])

    def find_runs(self, config_hash: str | None = None, status: str | Iterable[str] | None = None,
                  group: str | Iterable[str] | None = None) -> list[Run]:
        """Runs matching all given criteria (status/group: one value or several), oldest first."""
        rows = self._index.select_runs(config_hash=config_hash, status=_as_list(status),
                                       group=_as_list(group))
        return [Run(self._index, self.root, r) for r in rows]

    def delete_run(self, run_id: str | Run) -> None:
        """Remove a run (exact id) from the index, then its folder."""
        run_id = run_id.id if isinstance(run_id, Run) else str(run_id)
        folder = self.root / "runs" / files.check_name(run_id, "run", run_id)
        if not self._index.delete_run(run_id) and not folder.exists():
            raise StoreError(f"no run '{run_id}' in {self.root}")
        if folder.exists():
            trash = folder.with_name(f".deleted-{run_id}-{secrets.token_hex(4)}")
            folder.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    # -- light reads (no pandas: the CLI's ls and show) ----------------------------------
    def run_records(self, status: str | Iterable[str] | None = None,
                    group: str | Iterable[str] | None = None) -> list[dict[str, Any]]:
        """One dict per run, oldest first: the run columns of :meth:`runs` and ``config``
        (flattened, dotted keys)."""
        rows = self._index.select_runs(status=_as_list(status), group=_as_list(group))
        return [{**_run_columns(r), "config": flatten(json.loads(r["config_json"]))}
                for r in rows]

    def last_metrics(self, run_id: str | Run, names: Iterable[str] | None = None
                     ) -> dict[str, tuple[int, float]]:
        """``{name: (step, value)}`` at each metric's last step (of ``names``, default all),
        for one run."""
        run = self.get_run(run_id)
        out: dict[str, tuple[int, float]] = {}
        wanted = None if names is None else list(names)
        for _, step, _, name, value in self._index.metrics([run.id], wanted):
            out[name] = (step, float("nan") if value is None else value)  # ordered by step
        return out

    # -- tables -----------------------------------------------------------------------
    def runs(self, status: str | Iterable[str] | None = None,
             group: str | Iterable[str] | None = None, where: dict[str, Any] | None = None,
             **param_filters: Any) -> pd.DataFrame:
        """One row per run: run columns, then one column per dotted config key.

        ``where`` / keyword filters map a dotted key to a value or a list of accepted values;
        numbers match within a relative 1e-9, strings exactly, ``None`` matches a missing or
        null key. A config key equal to a run column (``name``) becomes ``config.<key>``."""
        import pandas as pd

        rows = self._index.select_runs(status=_as_list(status), group=_as_list(group),
                                       where={**(where or {}), **param_filters})
        records, param_columns = [], {}
        for r in rows:
            params = {(f"config.{k}" if k in RUN_FRAME_COLUMNS else k): v
                      for k, v in flatten(json.loads(r["config_json"])).items()}
            param_columns.update(dict.fromkeys(params))
            records.append({**_run_columns(r), **params})
        frame = pd.DataFrame.from_records(records, columns=RUN_FRAME_COLUMNS + list(param_columns))
        for column in ("created", "updated"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        frame["diverged_step"] = frame["diverged_step"].astype("Int64")
        return frame

    def metrics(self, runs: Iterable[str | Run] | str | None = None,
                names: Iterable[str] | str | None = None, where: dict[str, Any] | None = None,
                group: str | Iterable[str] | None = None) -> pd.DataFrame:
        """Scalars in long format (run, step, epoch, name, value), ordered by run, name, step.

        ``runs``: ids, unique prefixes or Runs (default: all); ``where``/``group`` restrict
        the runs as in :meth:`runs`. NaN values read back as NaN."""
        ids = None
        if runs is not None:
            runs = [runs] if isinstance(runs, str | Run) else runs
            ids = {self.get_run(r).id for r in runs}
        if where or group is not None:
            rows = self._index.select_runs(ids=None if ids is None else sorted(ids),
                                           group=_as_list(group), where=where)
            ids = {r["id"] for r in rows}
        names = _as_list(names)
        rows = [] if ids == set() or names == [] else self._index.metrics(
            None if ids is None else sorted(ids), names)
        return metrics_frame(rows)

    # -- experiment checks ------------------------------------------------------------
    def write_checks(self, experiment: str, scale: str, checks: Iterable[Any]) -> None:
        """Store an experiment's check table (objects with ``claim``, ``measured``,
        ``verdict`` and ``value``, in order), replacing that of the same (experiment,
        scale)."""
        rows = [(str(c.claim), str(c.measured), str(c.verdict),
                 None if c.value is None else float(c.value)) for c in checks]
        self._index.replace_checks(experiment, scale, now(), rows)

    def checks(self, experiment: str | Iterable[str] | None = None,
               scale: str | Iterable[str] | None = None) -> pd.DataFrame:
        """The stored check tables: one row per check (experiment, scale, ordinal, created,
        claim, measured, verdict, value), ordered by experiment, scale and ordinal;
        ``experiment``/``scale``: one value or several (default: all)."""
        import pandas as pd

        rows = self._index.select_checks(_as_list(experiment), _as_list(scale))
        frame = pd.DataFrame.from_records(rows, columns=list(CHECK_COLUMNS))
        frame["created"] = pd.to_datetime(frame["created"], utc=True, format="ISO8601")
        return frame.astype({"ordinal": "int64", "value": "float64"})
