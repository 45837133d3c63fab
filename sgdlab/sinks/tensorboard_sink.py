"""TensorBoard event files (``pip install 'sgdlab[tensorboard]'``), written with
``torch.utils.tensorboard.SummaryWriter``: one log folder per run, ``<dest>/<run id>``
(``dest`` defaults to ``<store>/tensorboard``, so ``tensorboard --logdir
sgdlab-runs/tensorboard`` shows every run).

Scalars are TensorBoard's float32 ``simple_value`` (a float64 metric is rounded to the
nearest float32); a probe's finite arrays become histograms ``<probe>/<key>``; the config
(JSON) and the run's end are text summaries ``config`` and ``status``. A resumed run starts
its writer with ``purge_step = step + 1``, so TensorBoard discards what a killed session
logged after the checkpoint, as the store does; a fresh start purges from step 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sgdlab.sinks.base import Record, RunInfo, Sink


def log_dir(dest: str, run: RunInfo) -> Path:
    root = Path(dest).expanduser() if dest else run.path.parents[1] / "tensorboard"
    return root / run.id


class TensorBoardSink(Sink):
    def __init__(self, dest: str = "") -> None:
        self.dest = dest
        self.writer = None

    def start(self, run: RunInfo, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = log_dir(self.dest, run)
        self.writer = SummaryWriter(str(self.path), purge_step=step + 1 if step > 0 else 0)
        if step == 0:
            self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=2) + "\n```",
                                 0)

    def log(self, records: list[Record]) -> None:
        for step, _epoch, metrics in records:
            for name, value in metrics.items():
                self.writer.add_scalar(name, float(value), step)

    def log_arrays(self, name: str, step: int, arrays: dict[str, Any]) -> None:
        for key, value in arrays.items():
            array = np.asarray(value, dtype=np.float64) if np.asarray(value).dtype.kind in "biuf" \
                else None
            if array is not None and array.size and np.isfinite(array).all():
                self.writer.add_histogram(f"{name}/{key}", array, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def end(self, status: str, step: int, message: str | None = None) -> None:
        text = status + (f" at step {step}" if status != "finished" else "") + (
            f": {message}" if message else "")
        if self.writer is not None:
            self.writer.add_text("status", text, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
