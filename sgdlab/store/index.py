"""The SQLite index of a store: runs, their flattened parameters and every scalar metric.

One file ``<root>/index.sqlite`` in WAL mode, written by many processes and threads at once.
Each thread of each process opens its own connection (a connection inherited through
``fork`` is never used nor closed in the child). Every write is one ``BEGIN IMMEDIATE``
transaction, retried with jittered exponential backoff while the database is locked.

Parameters are stored as ``value_text`` (strings as is, everything else as canonical JSON:
``true``, ``0.1``, ``[1, 2]``) and ``value_num`` (ints and floats only). Metric values are
REAL; NaN is stored as NULL (read back as NaN, found with ``value IS NULL``), ±inf as ±inf.

Table ``checks`` (schema version 2) holds the check table of the last run of each
experiment at each scale: (experiment, scale, ordinal, created, claim, measured, verdict,
value), replaced as a whole when the experiment is rerun.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sgdlab.store.errors import StoreError

SCHEMA_VERSION = 2  # 2: table checks
BUSY_TIMEOUT_S = 10.0  # sqlite's own busy handler, per statement
LOCK_DEADLINE_S = 300.0  # our retry loop gives up after this long
REL_TOL = 1e-9  # numeric parameter filters match within this relative tolerance
CHUNK = 500  # ids per "IN (...)" list

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, grp TEXT, status TEXT NOT NULL,
        config_json TEXT NOT NULL, config_hash TEXT NOT NULL, created TEXT NOT NULL,
        updated TEXT NOT NULL, message TEXT, diverged_step INTEGER)""",
    "CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (config_hash)",
    "CREATE INDEX IF NOT EXISTS runs_by_group ON runs (grp)",
    """CREATE TABLE IF NOT EXISTS params (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, key TEXT NOT NULL,
        value_text TEXT, value_num REAL, PRIMARY KEY (run_id, key)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS params_by_key ON params (key, value_num)",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, step INTEGER NOT NULL,
        epoch REAL, name TEXT NOT NULL, value REAL,
        PRIMARY KEY (run_id, name, step)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS checks (
        experiment TEXT NOT NULL, scale TEXT NOT NULL, ordinal INTEGER NOT NULL,
        created TEXT NOT NULL, claim TEXT NOT NULL, measured TEXT NOT NULL,
        verdict TEXT NOT NULL, value REAL,
        PRIMARY KEY (experiment, scale, ordinal)) WITHOUT ROWID""",
]
CHECK_COLUMNS = ("experiment", "scale", "ordinal", "created", "claim", "measured", "verdict",
                 "value")
RUN_COLUMNS = ("id", "name", "grp", "status", "config_json", "config_hash", "created",
               "updated", "message", "diverged_step")
_orphans: list[sqlite3.Connection] = []  # connections inherited through fork: never touched
_live: weakref.WeakSet[Index] = weakref.WeakSet()


def _close_before_fork() -> None:
    """Close the forking thread's idle connections, so the child inherits as little as can be."""
    for index in list(_live):
        local = index._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid() and not conn.in_transaction:
            conn.close()
            local.conn = None


os.register_at_fork(before=_close_before_fork)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the input of ``config_hash``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


NOT_IDENTITY = ("trackers",)  # config keys that do not change the trajectory
# fields added to the config after stores were written: at these values they hash as if
# absent, so the runs of an older store still match their configs (a sweep skips them)
ABSENT_AT = {("data", "options"): {}, ("model", "options"): {},
             ("train", "eval_epochs"): 1, ("train", "eval_splits"): ["train", "test"],
             ("train", "input_noise"): 0.0}


def config_hash(config: dict) -> str:
    """The ``config_hash`` of a run with this config: sha256 of its canonical JSON (after a
    JSON round trip, so a tuple and a list, or 1.0 and 1.0 written twice, hash alike),
    without the keys of :data:`NOT_IDENTITY` (where a run's metrics are also sent) and of
    :data:`ABSENT_AT` at their default."""
    resolved = json.loads(json.dumps(config, allow_nan=False))
    if isinstance(resolved, dict):
        for key in NOT_IDENTITY:
            resolved.pop(key, None)
        for (section, key), default in ABSENT_AT.items():
            table = resolved.get(section)
            if isinstance(table, dict) and table.get(key, default) == default:
                table.pop(key, None)
    return hashlib.sha256(canonical_json(resolved).encode()).hexdigest()


METRIC_COLUMNS = ["run", "step", "epoch", "name", "value"]


def metrics_frame(rows: list[tuple]):
    """(run, step, epoch, name, value) rows as a DataFrame with those typed columns."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=METRIC_COLUMNS)
    return frame.astype({"run": object, "step": "int64", "epoch": "float64",
                         "name": object, "value": "float64"})


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; an empty dict stays a leaf."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def encode_param(value: Any) -> tuple[str | None, float | None]:
    """(value_text, value_num) of one flattened config value."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int | float):
        return json.dumps(value), (None if math.isnan(value) else float(value))
    return canonical_json(value), None


def _value_condition(value: Any) -> tuple[str, list]:
    """SQL condition on ``p`` (a params row) matching one filter value."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool):
        return "p.value_num IS NULL AND p.value_text = ?", ["true" if value else "false"]
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "p.value_text = 'NaN'", []
        if math.isinf(value):
            return "p.value_num = ?", [value]
        tol = REL_TOL * abs(value)
        return "p.value_num BETWEEN ? AND ?", [value - tol, value + tol]
    if isinstance(value, str):
        return "p.value_num IS NULL AND p.value_text = ?", [value]
    if isinstance(value, list | tuple | dict):
        return "p.value_num IS NULL AND p.value_text = ?", [canonical_json(value)]
    raise TypeError(f"cannot filter runs on a {type(value).__name__} value: {value!r}")


def as_values(value: Any) -> list:
    """A filter value or a collection of alternatives -> list of alternatives."""
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:
        return list(value.tolist())
    return [value]


def param_filter_sql(where: dict[str, Any]) -> tuple[list[str], list]:
    """One SQL clause on ``runs`` per key; within a key any of the values matches."""
    clauses, args = [], []
    for key, value in where.items():
        alts = []
        for v in as_values(value):
            if v is None:
                alts.append("NOT EXISTS (SELECT 1 FROM params p WHERE p.run_id = runs.id AND "
                            "p.key = ? AND (p.value_text IS NOT NULL OR p.value_num IS NOT NULL))")
                args.append(key)
            else:
                cond, cargs = _value_condition(v)
                alts.append("EXISTS (SELECT 1 FROM params p WHERE p.run_id = runs.id AND "
                            f"p.key = ? AND {cond})")
                args += [key, *cargs]
        clauses.append("(" + " OR ".join(alts) + ")" if alts else "0")
    return clauses, args


def _in(column: str, values: Sequence) -> str:
    return f"{column} IN ({','.join('?' * len(values))})"


def _chunks(values: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class Index:
    """Connections, schema and every SQL statement of one ``index.sqlite``."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        _live.add(self)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    # -- connections -------------------------------------------------------------------
    def _retry(self, fn: Callable[[], Any]) -> Any:
        delay, deadline = 0.002, time.monotonic() + LOCK_DEADLINE_S
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(f"index {self.path} stayed locked for "
                                     f"{LOCK_DEADLINE_S:.0f} s") from exc
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(2 * delay, 0.25)

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        if conn is not None:  # opened before a fork: leave it alone, forever
            _orphans.append(conn)
            local.conn = None
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            self._retry(lambda: self._setup(conn))
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc):
                raise
            raise StoreError(f"cannot open index {self.path}: {exc}") from exc
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0]
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            version = None
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"index {self.path} has schema version {version}; this sgdlab "
                             f"reads up to {SCHEMA_VERSION}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:  # idempotent: also migrates 1 -> 2 (adds `checks`)
                conn.execute(statement)
            # future migrations that alter tables: `if version == 2: ...`
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection (a later call opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def _transaction(self, fn: Callable[[sqlite3.Connection], Any], write: bool,
                     empty: Any = None) -> Any:
        def attempt():
            conn = self._connect(create=write)
            if conn is None:
                return empty
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
                return out
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return self._retry(attempt)

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` in one write transaction (creating the index if needed)."""
        return self._transaction(fn, write=True)

    def read(self, fn: Callable[[sqlite3.Connection], Any], empty: Any = None) -> Any:
        """Run ``fn(conn)`` on one snapshot; ``empty`` if the index does not exist yet."""
        return self._transaction(fn, write=False, empty=empty)

    # -- runs --------------------------------------------------------------------------
    def insert_run(self, make_id: Callable[[], str], row: dict, params: dict[str, Any]) -> str:
        """Insert a run under the first id from ``make_id`` not taken yet; returns it."""
        def fn(conn):
            run_id = make_id()
            while conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                run_id = make_id()
            values = {**row, "id": run_id}
            conn.execute(f"INSERT INTO runs ({','.join(RUN_COLUMNS)}) VALUES "
                         f"({','.join('?' * len(RUN_COLUMNS))})",
                         [values.get(c) for c in RUN_COLUMNS])
            conn.executemany("INSERT INTO params VALUES (?, ?, ?, ?)",
                             [(run_id, k, *encode_param(v)) for k, v in params.items()])
            return run_id
        return self.write(fn)

    def lookup(self, id_or_prefix: str) -> list[sqlite3.Row]:
        """The run with this exact id, else every run whose id starts with it (at most 11)."""
        def fn(conn):
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (id_or_prefix,)).fetchone()
            if row is not None:
                return [row]
            return conn.execute("SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id "
                                "LIMIT 11", (len(id_or_prefix), id_or_prefix)).fetchall()
        return self.read(fn, empty=[])

    def select_runs(self, *, ids: Sequence[str] | None = None, config_hash: str | None = None,
                    status: Iterable[str] | None = None, group: Iterable[str] | None = None,
                    where: dict[str, Any] | None = None) -> list[sqlite3.Row]:
        """Runs matching every given criterion, oldest first."""
        clauses, args = [], []
        if config_hash is not None:
            clauses.append("config_hash = ?")
            args.append(config_hash)
        for column, values in (("status", status), ("grp", group)):
            if values is not None:
                values = list(values)
                clauses.append(_in(column, values))
                args += values
        if where:
            more, more_args = param_filter_sql(where)
            clauses += more
            args += more_args

        def fn(conn):
            base = "SELECT * FROM runs WHERE " + " AND ".join(clauses or ["1"])
            if ids is None:
                return conn.execute(base + " ORDER BY created, id", args).fetchall()
            rows = []
            for chunk in _chunks(list(ids)):
                rows += conn.execute(f"{base} AND {_in('id', chunk)}", [*args, *chunk])
            return sorted(rows, key=lambda r: (r["created"], r["id"]))
        return self.read(fn, empty=[])

    def get(self, run_id: str) -> sqlite3.Row | None:
        return self.read(lambda c: c.execute("SELECT * FROM runs WHERE id = ?",
                                             (run_id,)).fetchone())

    def update_run(self, run_id: str, **values: Any) -> bool:
        """Set columns of one run; False if it does not exist."""
        sets = ", ".join(f"{k} = ?" for k in values)
        return self.write(lambda c: c.execute(f"UPDATE runs SET {sets} WHERE id = ?",
                                              [*values.values(), run_id]).rowcount > 0)

    def delete_run(self, run_id: str) -> bool:
        def fn(conn):
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM params WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0
        return self.write(fn)

    # -- metrics -----------------------------------------------------------------------
    def log(self, run_id: str, now: str, rows: list[tuple]) -> bool:
        """Insert (step, epoch, name, value) rows (replacing equal keys); False if no run."""
        def fn(conn):
            if conn.execute("UPDATE runs SET updated = ? WHERE id = ?",
                            (now, run_id)).rowcount == 0:
                return False
            conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                             [(run_id, *row) for row in rows])
            return True
        return self.write(fn)

    def truncate_metrics(self, run_id: str, after_step: int) -> int:
        return self.write(lambda c: c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?",
                                              (run_id, after_step)).rowcount)

    def metrics(self, ids: Sequence[str] | None, names: Sequence[str] | None) -> list[tuple]:
        """(run, step, epoch, name, value) rows ordered by run, name, step."""
        name_sql = f" AND {_in('name', names)}" if names is not None else ""
        sql = "SELECT run_id, step, epoch, name, value FROM metrics WHERE "

        def fn(conn):
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: much faster than sqlite3.Row
            if ids is None:
                return cursor.execute(f"{sql}1{name_sql} ORDER BY run_id, name, step",
                                      list(names or [])).fetchall()
            rows = []
            for chunk in _chunks(sorted(set(ids))):
                rows += cursor.execute(
                    f"{sql}{_in('run_id', chunk)}{name_sql} ORDER BY run_id, name, step",
                    [*chunk, *(names or [])]).fetchall()
            return rows
        return self.read(fn, empty=[])

    # -- experiment checks -------------------------------------------------------------
    def replace_checks(self, experiment: str, scale: str, created: str,
                       rows: list[tuple]) -> None:
        """Replace every check of (experiment, scale) by (claim, measured, verdict, value)
        rows, numbered 0, 1, ... in order."""
        def fn(conn):
            conn.execute("DELETE FROM checks WHERE experiment = ? AND scale = ?",
                         (experiment, scale))
            conn.executemany(f"INSERT INTO checks ({','.join(CHECK_COLUMNS)}) VALUES "
                             f"({','.join('?' * len(CHECK_COLUMNS))})",
                             [(experiment, scale, i, created, *row) for i, row in enumerate(rows)])
        self.write(fn)

    def select_checks(self, experiments: Sequence[str] | None,
                      scales: Sequence[str] | None) -> list[tuple]:
        """Check rows (CHECK_COLUMNS) ordered by experiment, scale, ordinal."""
        clauses, args = [], []
        for column, values in (("experiment", experiments), ("scale", scales)):
            if values is not None:
                clauses.append(_in(column, values))
                args += list(values)

        def fn(conn):
            cursor = conn.cursor()
            cursor.row_factory = None
            return cursor.execute(
                f"SELECT {','.join(CHECK_COLUMNS)} FROM checks WHERE "
                f"{' AND '.join(clauses or ['1'])} ORDER BY experiment, scale, ordinal",
                args).fetchall()
        return self.read(fn, empty=[])
