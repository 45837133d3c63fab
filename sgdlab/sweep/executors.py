"""Executors: how a sweep's points are trained.

An executor gets the tasks still to do (:class:`Task`: a validated config and ``new`` or
``resume``) and yields one :class:`Outcome` per task as each ends,
in any order::

    with executor:                         # leaving the block stops what still runs
        for task, outcome in executor.run(tasks, store):
            ...

``Outcome.status`` is "finished", "diverged", "failed" (an exception, in ``message``; the
trainer marked the run failed) or "killed" (the process training it died: the run stays
"running" in the store and the next sweep resumes it). An executor may train several
tasks at once, even in one model (a vectorized ensemble), as long as it yields each
task's outcome. Executors that run elsewhere import nothing of the caller: a task travels
as a pickle of its config.

:class:`InProcess` trains one task after another in this process; :class:`WorkerProcesses`
keeps N spawned worker processes for the whole sweep (torch imported once per worker),
hands each the next task over its own pipe, and replaces a worker that dies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sgdlab.config import RunConfig
    from sgdlab.store import Store

OUTCOMES = ("finished", "diverged", "failed", "killed")


@dataclass
class Task:
    """One point of a sweep and what to do with it: ``new``, ``resume`` or ``skip``."""

    index: int
    config: RunConfig
    config_hash: str
    action: str
    run_id: str | None = None  # the run resumed or skipped
    status: str | None = None  # its status in the store


@dataclass(frozen=True)
class Outcome:
    """How one task ended: its run (None if none was created), status and message."""

    run_id: str | None
    status: str
    message: str | None = None


class Executor:
    """Base class: implement :meth:`run`; :meth:`close` stops whatever still runs."""

    name = ""

    def run(self, tasks: Sequence[Task], store: Store) -> Iterator[tuple[Task, Outcome]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_task(task: Task, store: Store, progress: bool | None = False) -> Outcome:
    """Train or resume one task; never raises an Exception (a failure is an Outcome)."""
    from sgdlab.train import resume, train

    try:
        if task.action == "resume":
            run = resume(store, task.run_id, progress=progress)
        else:
            run = train(task.config, store, progress=progress)
        return Outcome(run.id, run.status, run.message)
    except Exception as exc:  # the trainer has marked the run failed (if it was created)
        return failed_outcome(task, store, exc)


def failure_message(exc: BaseException) -> str:
    """An exception as one line for a run's message: "Type: first line" (500 chars)."""
    return (f"{type(exc).__name__}: {exc}".splitlines() or ["?"])[0][:500]


def failed_outcome(task: Task, store: Store, exc: BaseException) -> Outcome:
    """The task failed with ``exc``: its run (resumed, or the one it created, if any)."""
    return Outcome(task.run_id or created_run(store, task.config_hash), "failed",
                   failure_message(exc))


def created_run(store: Store, config_hash: str) -> str | None:
    """The newest run with this config hash (the one a failed ``train`` created), if any."""
    runs = store.find_runs(config_hash=config_hash)
    return runs[-1].id if runs else None


class InProcess(Executor):
    """One task after another in this process (each shows its progress bar on a terminal
    unless ``progress`` is False)."""

    name = "inline"

    def __init__(self, progress: bool | None = None) -> None:
        self.progress = progress

    def run(self, tasks: Sequence[Task], store: Store) -> Iterator[tuple[Task, Outcome]]:
        for task in tasks:
            yield task, run_task(task, store, self.progress)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _die_with_parent() -> None:
    """Linux: this process is killed when its parent dies (a sweep killed with SIGKILL
    takes its workers with it, instead of leaving them training runs it will resume)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such call
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(conn, threads: int, root: str) -> None:
    """A worker process: train the tasks sent over ``conn`` until it sends None. The
    trainer is imported before the first task arrives (while the sweep plans)."""
    _die_with_parent()
    import torch

    import sgdlab.train.loop  # noqa: F401  (imported once, before the first task)
    from sgdlab.store import Store

    torch.set_num_threads(threads)
    store = Store(root)
    try:
        while (task := conn.recv()) is not None:
            if isinstance(task, list):  # configs to validate (WorkerProcesses.validate)
                conn.send(_validate_here(task))
                continue
            conn.send((task.index, run_task(task, store)))
    except (EOFError, KeyboardInterrupt):  # the sweep went away, or Ctrl-C: stop quietly
        return
    # Asked to stop: every run it trained is on disk (a run reports only after its last
    # checkpoint is written), so skip the interpreter's teardown of torch (~1 s that the
    # sweep would wait for), as multiprocessing's forked children do.
    store.close()
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _validate_here(configs: list) -> list | BaseException:
    from sgdlab.train.validate import validate_configs

    try:
        return validate_configs(configs)
    except Exception as exc:  # not a config error: raised again in the sweep's process
        return exc


class _Worker:
    def __init__(self, context, threads: int, root: str) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads, root),
                                       daemon=True)
        self.process.start()
        child.close()
        self.task: Task | None = None

    def give(self, task: Task) -> None:
        self.task = task
        self.conn.send(task)

    def stop(self, now: bool = False) -> None:
        if self.process.is_alive():
            if now:
                self.process.terminate()
            else:
                with contextlib.suppress(BrokenPipeError, OSError):
                    self.conn.send(None)
        self.process.join(timeout=None if not now else 10)
        self.conn.close()


def _raise(answer: list | BaseException) -> list:
    if isinstance(answer, BaseException):
        raise answer
    return answer


class WorkerProcesses(Executor):
    """``workers`` spawned processes with ``threads`` torch threads each (default: the
    CPUs divided among them). A script that uses them needs the
    ``if __name__ == "__main__":`` guard (spawned workers import the main module)."""

    name = "processes"

    def __init__(self, workers: int, threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, cpu_count() // workers)
        self._pool: list[_Worker] = []
        self._root: str | None = None  # the store the pool's workers write to

    def _spawn(self, root: str, n: int) -> list[_Worker]:
        self._root = root
        context = multiprocessing.get_context("spawn")
        return [_Worker(context, self.threads, root) for _ in range(n)]

    def start(self, store: Store) -> None:
        """Spawn the workers now (they import torch and the trainer while the caller
        plans the sweep); :meth:`run` uses them, stopping those it has no task for."""
        if not self._pool:
            self._pool = self._spawn(str(store.root), self.workers)

    def validate(self, configs: list[RunConfig]) -> list[RunConfig | str]:
        """Validate configs in the first worker (:func:`sgdlab.train.validate.validate_configs`,
        given to :func:`~sgdlab.sweep.grid.load_grid`): the worker imports torch and the
        registries anyway, and the sweep's own process then never does (as whole processes,
        a second torch import cost a short sweep ~20% of its time). Here, if no worker has
        been started."""
        if not self._pool:
            return _raise(_validate_here(configs))
        conn = self._pool[0].conn
        try:
            conn.send(list(configs))
            answer = conn.recv()
        except (EOFError, OSError):  # the worker died: validate here; run() starts another
            self._pool.pop(0).stop(now=True)
            answer = _validate_here(configs)
        return _raise(answer)

    def run(self, tasks: Sequence[Task], store: Store) -> Iterator[tuple[Task, Outcome]]:
        root = str(store.root)
        queue = deque(tasks)
        if self._pool and self._root != root:
            self.close()
        wanted = min(self.workers, len(queue))
        for worker in self._pool[wanted:]:
            worker.stop()
        kept = self._pool[:wanted]
        self._pool = kept + self._spawn(root, wanted - len(kept))
        for worker in self._pool:
            worker.give(queue.popleft())
        while busy := [w for w in self._pool if w.task is not None]:
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                task = worker.task
                if worker.conn in ready or worker.conn.poll():
                    try:
                        _, outcome = worker.conn.recv()
                    except EOFError:  # died after the poll: handled as a death below
                        outcome = None
                    if outcome is not None:
                        worker.task = None
                        yield task, outcome
                        if queue:
                            worker.give(queue.popleft())
                        continue
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    worker.process.join()
                    code = worker.process.exitcode
                    worker.task = None
                    self._pool.remove(worker)
                    worker.conn.close()
                    yield task, Outcome(task.run_id or created_run(store, task.config_hash),
                                        "killed", f"worker process died (exit code {code})")
                    if queue:  # a new worker takes the dead one's place
                        (fresh,) = self._spawn(root, 1)
                        self._pool.append(fresh)
                        fresh.give(queue.popleft())
        self.close()

    def close(self) -> None:
        """Stop the workers: at once if one still trains (an interrupted sweep), else
        politely."""
        pool, self._pool = self._pool, []
        for worker in pool:
            worker.stop(now=worker.task is not None)
