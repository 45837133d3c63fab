"""The store as a sink: metrics into the SQLite index, arrays into the run folder, the
end of a run as its status."""

from __future__ import annotations

from typing import Any

from sgdlab.sinks.base import Record, RunInfo, Sink
from sgdlab.store import Run


class StoreSink(Sink):
    """Records into ``run`` (a :class:`~sgdlab.store.Run`); always the trainer's first sink."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def start(self, run: RunInfo, step: int) -> None:
        """Status "running"; metrics and arrays after ``step`` (a killed session's) deleted;
        a fresh start (step 0) deletes everything, step 0 included."""
        after = step if step > 0 else -1
        self.run.set_status("running")
        self.run.truncate_metrics(after)
        self.run.truncate_arrays(after)

    def log(self, records: list[Record]) -> None:
        self.run.log_many(records)

    def log_arrays(self, name: str, step: int, arrays: dict[str, Any]) -> None:
        self.run.save_arrays(name, step, arrays)

    def end(self, status: str, step: int, message: str | None = None) -> None:
        self.run.set_status(status, message=message,
                            diverged_step=step if status == "diverged" else None)
