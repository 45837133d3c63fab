"""One run: its row in the index and its folder ``runs/<id>/``.

Folder layout::

    config.json                         the resolved config (a copy of the index's)
    arrays/<name>/<step:09d>.npz        large arrays logged along training
    checkpoints/step_<step:09d>.pt      torch.save'd state, the newest ``keep`` kept
    <name>.safetensors, <name>.json     final weights, small results
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sgdlab.store import files
from sgdlab.store.errors import StoreError
from sgdlab.store.index import Index, metrics_frame

if TYPE_CHECKING:
    import pandas as pd

STATUSES = ("running", "finished", "diverged", "failed")


def _as_names(names: list[str] | str | None) -> list[str] | None:
    return [names] if isinstance(names, str) else None if names is None else list(names)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Run:
    """A handle on one stored run (get one from :class:`~sgdlab.store.Store`, never
    construct it): its row in the store's index and its folder under ``root``."""

    def __init__(self, index: Index, root: Path, row: Any):
        self._index, self.root = index, root
        self.id: str = row["id"]
        self.name: str = row["name"]
        self.group: str | None = row["grp"]
        self.config_hash: str = row["config_hash"]
        self.created: str = row["created"]
        self._config_json: str = row["config_json"]

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and (other.root, other.id) == (self.root, self.id)

    def __hash__(self) -> int:
        return hash((self.root, self.id))

    @property
    def path(self) -> Path:
        return self.root / "runs" / self.id

    @property
    def config(self) -> dict:
        """The resolved config (a fresh copy on each access)."""
        return json.loads(self._config_json)

    def _row(self) -> Any:
        row = self._index.get(self.id)
        if row is None:
            raise StoreError(f"run '{self.id}' is no longer in {self.root}")
        return row

    @property
    def status(self) -> str:
        """Current status, read from the index (another process may change it)."""
        return self._row()["status"]

    @property
    def message(self) -> str | None:
        return self._row()["message"]

    @property
    def diverged_step(self) -> int | None:
        return self._row()["diverged_step"]

    @property
    def updated(self) -> str:
        return self._row()["updated"]

    # -- index ------------------------------------------------------------------------
    def set_status(self, status: str, *, message: str | None = None,
                   diverged_step: int | None = None) -> None:
        """Set status, message and diverged step (``None`` clears them) and ``updated``."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        step = None if diverged_step is None else int(diverged_step)
        if not self._index.update_run(self.id, status=status, message=message,
                                            diverged_step=step, updated=now()):
            raise StoreError(f"run '{self.id}' is no longer in {self.root}")

    def log(self, step: int, metrics: dict[str, float], epoch: float | None = None) -> None:
        """Store scalars at ``step`` in one transaction; a name logged twice at a step is
        replaced. NaN is stored as NULL (read back as NaN), ±inf as ±inf."""
        self.log_many([(step, epoch, metrics)])

    def log_many(self, records: list[tuple[int, float | None, dict[str, float]]]) -> None:
        """Store (step, epoch, {name: value}) records in one transaction (as :meth:`log`)."""
        rows = []
        for step, epoch, metrics in records:
            ep = None if epoch is None else float(epoch)
            for name, value in metrics.items():
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise TypeError(f"metric {name!r} of run '{self.id}' is not a scalar: "
                                    f"{type(value).__name__}") from None
                rows.append((int(step), ep, str(name), None if math.isnan(value) else value))
        if rows and not self._index.log(self.id, now(), rows):
            raise StoreError(f"run '{self.id}' is no longer in {self.root}")

    def metrics(self, names: list[str] | str | None = None) -> pd.DataFrame:
        """This run's metrics: columns run, step, epoch, name, value."""
        return metrics_frame(self._index.metrics([self.id], _as_names(names)))

    def truncate_metrics(self, after_step: int) -> int:
        """Delete metrics logged at steps > ``after_step`` (on resume); returns the count."""
        return self._index.truncate_metrics(self.id, int(after_step))

    # -- arrays -----------------------------------------------------------------------
    def _arrays_dir(self, name: str) -> Path:
        return self.path / "arrays" / files.check_name(name, "array", self.id)

    def save_arrays(self, name: str, step: int, arrays: dict[str, np.ndarray]) -> None:
        """Write ``arrays/<name>/<step:09d>.npz`` atomically (replacing one at that step)."""
        files.write_npz(self._arrays_dir(name) / f"{int(step):09d}.npz", arrays)

    def array_names(self) -> list[str]:
        folder = self.path / "arrays"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def array_steps(self, name: str) -> list[int]:
        return files.array_steps(self._arrays_dir(name))

    def load_arrays(self, name: str, steps: list[int] | None = None
                    ) -> list[tuple[int, dict[str, np.ndarray]]]:
        """``[(step, {key: array})]`` sorted by step (only ``steps`` if given)."""
        folder = self._arrays_dir(name)
        if not folder.is_dir():
            have = ", ".join(self.array_names()) or "none"
            raise StoreError(f"run '{self.id}' has no arrays '{name}' (has: {have})")
        if steps is None:
            found = files.array_steps(folder)
        else:  # the asked steps that exist, without listing the folder (one call per step
            # while replaying a run would make that quadratic)
            found = [s for s in sorted({int(s) for s in steps})
                     if (folder / f"{s:09d}.npz").is_file()]
        return [(s, files.read_npz(folder / f"{s:09d}.npz")) for s in found]

    def truncate_arrays(self, after_step: int) -> int:
        """Delete arrays saved at steps > ``after_step`` (on resume); returns the count."""
        count = 0
        for name in self.array_names():
            folder = self.path / "arrays" / name
            for s in files.array_steps(folder):
                if s > after_step:
                    (folder / f"{s:09d}.npz").unlink(missing_ok=True)
                    count += 1
        return count

    # -- checkpoints ------------------------------------------------------------------
    def _checkpoint_path(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step_{int(step):09d}.pt"

    def checkpoint_steps(self) -> list[int]:
        return files.checkpoint_steps(self.path / "checkpoints")

    def save_checkpoint(self, step: int, state: dict | bytes, keep: int | None = 2) -> None:
        """torch.save ``state`` durably to ``checkpoints/step_<step>.pt`` (or write the bytes
        of :func:`~sgdlab.store.files.checkpoint_bytes`); keep the ``keep`` highest steps
        (``None``: all). TypeError if weights_only loading would refuse it."""
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, not {keep}")
        files.save_checkpoint(self._checkpoint_path(step), state)
        if keep is not None:
            for old in self.checkpoint_steps()[:-keep]:
                self._checkpoint_path(old).unlink(missing_ok=True)

    def load_checkpoint(self, step: int | None = None) -> dict | None:
        """The checkpoint at ``step``, or the newest readable one (``None`` if there is none).

        An unreadable newest checkpoint is skipped with a warning; if none is readable,
        StoreError. Put the step in the state: after a fallback it is not the newest one."""
        if step is not None:
            return files.load_checkpoint(self._checkpoint_path(step))
        steps = self.checkpoint_steps()
        first: StoreError | None = None
        for s in reversed(steps):
            try:
                return files.load_checkpoint(self._checkpoint_path(s))
            except StoreError as exc:
                first = first or exc
                if s != steps[0]:
                    warnings.warn(f"{exc}; falling back to an older checkpoint",
                                  RuntimeWarning, stacklevel=2)
        if len(steps) == 1:
            raise first
        if steps:
            raise StoreError(f"run '{self.id}' has no readable checkpoint "
                             f"({len(steps)} unreadable; the newest: {first})")
        return None

    # -- weights and results ----------------------------------------------------------
    def save_tensors(self, name: str, tensors: dict, metadata: dict[str, str] | None = None
                     ) -> None:
        """Write ``<name>.safetensors`` (CPU copies of ``tensors``) durably."""
        path = self.path / f"{files.check_name(name, 'tensors', self.id)}.safetensors"
        files.save_tensors(path, tensors, metadata)

    def load_tensors(self, name: str) -> dict:
        path = self.path / f"{files.check_name(name, 'tensors', self.id)}.safetensors"
        return files.load_tensors(path, self.id)

    def _json_path(self, name: str) -> Path:
        name = name.removesuffix(".json")
        return self.path / f"{files.check_name(name, 'json', self.id)}.json"

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``<name>.json`` atomically (``config`` is reserved for the run's config)."""
        if name.removesuffix(".json") == "config":
            raise StoreError(f"run '{self.id}': config.json is written by the store only")
        files.write_json(self._json_path(name), obj)

    def read_json(self, name: str) -> Any:
        return files.read_json(self._json_path(name), self.id)
