"""Checkpoints written behind the training loop.

A checkpoint is serialized in the trainer's thread (``torch.save`` into memory, about 2 ms
for a 300k-parameter MLP: a snapshot, so training may go on changing the tensors) and
written by one background thread: the file, its fsync, the atomic rename, the folder's
fsync and the pruning of old checkpoints (10-20 ms here, mostly the two fsyncs). At most one
write is in flight: the next checkpoint, and the end of a session, wait for the previous
one, so a run killed at any moment resumes from its newest complete checkpoint, as
before, and a finished run's checkpoints are all on disk before its status says so.
"""

from __future__ import annotations

import threading

from sgdlab.store import Run
from sgdlab.store.files import checkpoint_bytes


class CheckpointWriter:
    """Writes one checkpoint at a time in a background thread; :meth:`wait` joins it and
    raises what the write raised."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, run: Run, step: int, state: dict, keep: int | None) -> None:
        data = checkpoint_bytes(state)  # the snapshot, before training changes the tensors
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(run, step, data, keep),
                                        name=f"checkpoint-{run.id}", daemon=True)
        self._thread.start()

    def _write(self, run: Run, step: int, data: bytes, keep: int | None) -> None:
        try:
            run.save_checkpoint(step, data, keep=keep)
        except BaseException as exc:  # raised in the trainer's thread by wait()
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
