"""Where a run's measurements go: the sink protocol.

The trainer emits everything it measures to a list of sinks, in order: the run's store
(:class:`~sgdlab.sinks.store.StoreSink`, always first) and any others (experiment trackers:
TensorBoard, MLflow, W&B). A sink overrides the hooks it needs; each is called from the
trainer's process, in this order over a run's life::

    start(run, step)          training starts at ``step`` (0, or the step a resumed run
                              continues from: drop anything held for later steps, which a
                              killed session wrote)
    log(records)              scalar metrics: a list of (step, epoch, {name: value});
                              NaN and ±inf are values too
    log_arrays(name, step, arrays)   arrays of a probe ({key: numpy array})
    flush()                   make what was logged durable (at checkpoints and the end)
    end(status, step, message)       the run ended: "finished", "diverged" (``step`` is the
                              first non-finite step), "failed" (an exception; ``message``)
    close()                   always called last, also after a crash

:class:`Sinks` fans one call out to every sink; :func:`replay` sends a stored run to sinks
afterwards (``sgdlab export``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Record = tuple[int, float | None, dict[str, float]]  # (step, epoch, {name: value})


@dataclass(frozen=True)
class RunInfo:
    """What a sink may know of the run it records."""

    id: str
    name: str
    group: str | None
    config: dict[str, Any]
    path: Path  # the run's folder in the store


class Sink:
    """Base class: every hook is a no-op (module docstring for the protocol)."""

    def start(self, run: RunInfo, step: int) -> None:
        pass

    def log(self, records: list[Record]) -> None:
        pass

    def log_arrays(self, name: str, step: int, arrays: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def end(self, status: str, step: int, message: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class Sinks(Sink):
    """Several sinks as one, called in order. ``close`` reaches every sink even if one
    raises (the first error is raised after all were closed)."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)
        for sink in self.sinks:
            if not isinstance(sink, Sink):
                raise TypeError(f"a sink must be a sgdlab.sinks.Sink, got {type(sink).__name__}")

    def start(self, run: RunInfo, step: int) -> None:
        for sink in self.sinks:
            sink.start(run, step)

    def log(self, records: list[Record]) -> None:
        if records:
            for sink in self.sinks:
                sink.log(records)

    def log_arrays(self, name: str, step: int, arrays: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_arrays(name, step, arrays)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def end(self, status: str, step: int, message: str | None = None) -> None:
        for sink in self.sinks:
            sink.end(status, step, message)

    def close(self) -> None:
        error: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close the others before raising
                error = error or exc
        if error is not None:
            raise error
