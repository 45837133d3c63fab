"""Weights & Biases (``pip install 'sgdlab[wandb]'``), offline by default: no account, no
network; ``wandb sync <dest>/wandb/offline-run-*`` uploads later. One W&B run per sgdlab
run (id and name = the sgdlab run id, group = its group, config = its config) in the project
``project`` (default: the run's group, else ``sgdlab``), its files under ``<dest>/wandb``
(default: wandb's own, ``$WANDB_DIR`` or the current directory).

Scalars go to ``run.log(..., step=step)``; the end to the summary (``sgdlab/status``,
``sgdlab/message``) and the exit code (0 for finished). W&B keeps a run's steps increasing:
after a resume it ignores the steps a killed session logged past the checkpoint when they
come again (the values are the same on CPU, where a resume is bit-identical). Arrays are
not sent (the store keeps them).
"""

from __future__ import annotations

import re
from pathlib import Path

from sgdlab.sinks.base import Record, RunInfo, Sink


def wandb_id(run_id: str) -> str:
    """A W&B run id for an sgdlab run id (W&B ids take letters, digits, '-', '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[:128]


class WandbSink(Sink):
    def __init__(self, dest: str = "", project: str = "", online: bool = False) -> None:
        self.dest, self.project, self.online = dest, project, online
        self.run = None

    def start(self, run: RunInfo, step: int) -> None:
        import wandb

        folder = None
        if self.dest:
            folder = Path(self.dest).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                  x_disable_meta=True)
        self.run = wandb.init(
            project=self.project or run.group or "sgdlab", name=run.id, id=wandb_id(run.id),
            group=run.group or None, config=run.config, dir=None if folder is None else str(folder),
            mode="online" if self.online else "offline", resume="allow", reinit="create_new",
            settings=settings)
        self._step = -1
        self._pending: dict[str, float] = {}

    def log(self, records: list[Record]) -> None:
        for step, _epoch, metrics in records:
            if step != self._step:
                self._commit()
                self._step = step
            self._pending.update({k: float(v) for k, v in metrics.items()})

    def _commit(self) -> None:
        if self._pending:
            self.run.log(self._pending, step=self._step)
            self._pending = {}

    def flush(self) -> None:
        if self.run is not None:
            self._commit()

    def end(self, status: str, step: int, message: str | None = None) -> None:
        if self.run is None:  # start failed
            return
        self._commit()
        self.run.summary["sgdlab/status"] = status
        self.run.summary["sgdlab/step"] = step
        if message:
            self.run.summary["sgdlab/message"] = message
        self._exit = 0 if status == "finished" else 1

    def close(self) -> None:
        if self.run is not None:
            self._commit()
            self.run.finish(exit_code=getattr(self, "_exit", 1))
            self.run = None
