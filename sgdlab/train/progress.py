"""Progress: a bar (rich) on a terminal, a plain line every few seconds otherwise.

Both say what runs while the step count stands still (a probe measuring, the evaluation),
so a Hessian probe at step 0 is not taken for a hung run."""

from __future__ import annotations

import sys
import time

import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

PLAIN_EVERY_S = 10.0  # seconds between plain lines


class Progress:
    """Steps done out of ``total``, with the last batch loss; ``enabled=None``: a bar when
    stderr is a terminal, else plain lines at most every 10 s; ``False``: silent. Display is
    not part of a run's config (it does not change the run)."""

    def __init__(self, total: int, name: str, enabled: bool | None = None):
        self._bar = None
        self._plain = enabled is None and not sys.stderr.isatty()
        self.total, self.name, self.step, self.loss, self.what = total, name, 0, "-", ""
        self._last = 0.0
        if enabled or (enabled is None and not self._plain):
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                TextColumn("{task.fields[what]}"), transient=False,
            )
            self._task = self._bar.add_task(name, total=total, loss="-", what="")
            self._bar.start()
        elif self._plain:
            self._start = time.monotonic()
            self._print(f"training {total} steps")

    def _print(self, text: str) -> None:
        self._last = time.monotonic()
        print(f"{self.name}: {text}", file=sys.stderr, flush=True)

    def _plain_line(self) -> None:
        if time.monotonic() - self._last >= PLAIN_EVERY_S:
            elapsed = time.monotonic() - self._start
            doing = f", {self.what}" if self.what else ""
            self._print(f"step {self.step}/{self.total}, loss {self.loss}, "
                        f"{elapsed:.0f} s{doing}")

    def update(self, step: int, loss: torch.Tensor | None = None) -> None:
        if self._bar is None and not self._plain:
            return
        self.step = step
        if loss is not None and step % 20 == 0:  # .item() syncs a GPU: only now and then
            self.loss = f"{loss.item():.4f}"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=self.loss)
        else:
            self._plain_line()

    def doing(self, what: str) -> None:
        """Say what runs now ("measuring hessian"); "" when the steps go on."""
        self.what = what
        if self._bar is not None:
            self._bar.update(self._task, what=what)
        elif self._plain and what:
            self._plain_line()

    def done(self, took: str) -> None:
        """The steps go on; say what the pause just ended cost ("last: hessian 2.1 s")
        until the next one."""
        self.doing(f"last: {took}" if took else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._plain:
            self._print(f"step {self.step}/{self.total}, loss {self.loss}, "
                        f"{time.monotonic() - self._start:.0f} s, done")
