"""A progress bar (rich) that stays quiet when the output is not a terminal."""

from __future__ import annotations

import sys

import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    """Steps done out of ``total``, with the last batch loss; ``enabled=None``: only when
    stderr is a terminal. Display is not part of a run's config (it does not change the run)."""

    def __init__(self, total: int, name: str, enabled: bool | None = None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = None
        if enabled:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=False,
            )
            self._task = self._bar.add_task(name, total=total, loss="-")
            self._bar.start()

    def update(self, step: int, loss: torch.Tensor | None = None) -> None:
        if self._bar is None:
            return
        fields = {}
        if loss is not None and step % 20 == 0:  # .item() syncs a GPU: only now and then
            fields["loss"] = f"{loss.item():.4f}"
        self._bar.update(self._task, completed=step, **fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
