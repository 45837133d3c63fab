"""Send a stored run to sinks afterwards (``sgdlab export``): the run's start, its scalars
and arrays in step order (the order the trainer emitted them), its end and close, as the
trainer would have called them."""

from __future__ import annotations

import math
from collections import defaultdict

from sgdlab.sinks.base import Record, RunInfo, Sink, Sinks
from sgdlab.store import Run, Store

CHUNK = 64  # steps per log() call, as the trainer batches them


def replay(store: Store, run: Run, sinks: list[Sink]) -> int:
    """Replay ``run`` into ``sinks``; returns the number of scalar values sent."""
    metrics = store.metrics(runs=[run.id]).sort_values(["step"], kind="stable")
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    epochs: dict[int, float | None] = {}
    for step, epoch, name, value in zip(metrics["step"], metrics["epoch"], metrics["name"],
                                        metrics["value"]):
        by_step[int(step)][str(name)] = float(value)
        epochs.setdefault(int(step), None if epoch is None or math.isnan(epoch) else epoch)
    arrays: dict[int, list[str]] = defaultdict(list)
    for name in run.array_names():
        for step in run.array_steps(name):
            arrays[step].append(name)
    fan = Sinks(sinks)
    sent = 0
    try:
        fan.start(RunInfo(run.id, run.name, run.group, run.config, run.path), 0)
        pending: list[Record] = []
        for step in sorted(set(by_step) | set(arrays)):
            if step in by_step:
                pending.append((step, epochs[step], by_step[step]))
                sent += len(by_step[step])
            if step in arrays or len(pending) >= CHUNK:
                fan.log(pending)
                pending = []
            for name in arrays.get(step, []):
                fan.log_arrays(name, step, run.load_arrays(name, [step])[0][1])
        fan.log(pending)
        fan.flush()
        status = run.status
        if status in ("finished", "diverged", "failed"):
            last = max(by_step, default=0)
            step = run.diverged_step if status == "diverged" else last
            message = run.message
            fan.end(status, step if step is not None else last, message)
    finally:
        fan.close()
    return sent
