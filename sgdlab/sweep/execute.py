"""Running a sweep: skip what is done, resume what was killed, train the rest.

:func:`plan_sweep` looks up each point's resolved config (its ``config_hash``) in the
store's runs of the sweep's group:

- a run with status finished or diverged: the point is **skipped**;
- else a run left running or failed (a killed sweep, a crash): the newest one is
  **resumed** from its last checkpoint (:func:`sgdlab.train.resume`), not restarted;
- else a **new** run is trained.

So rerunning a killed sweep continues it, and rerunning a finished one does nothing. A
failed run is retried on every rerun. Two sweep processes on the same grid at once are not
coordinated (both would resume the same runs); within one sweep each point is one task.

Executors: ``workers=0`` trains the points one after the other in this process;
``workers=N >= 1`` uses N worker processes (``spawn``), each with
``torch.set_num_threads(threads or max(1, cpus // N))``, collecting results as they
complete. An exception in one point marks its run failed (the trainer writes the
message) and the sweep goes on; a diverged run is a result, not an error.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import torch

from sgdlab.config import RunConfig, from_dict
from sgdlab.store import Store
from sgdlab.store.index import canonical_json
from sgdlab.sweep.grid import Sweep
from sgdlab.train import resume, train

DONE = ("finished", "diverged")


def config_hash(cfg: RunConfig) -> str:
    """The store's ``config_hash`` of a run created from ``cfg`` (as in ``create_run``)."""
    resolved = json.loads(json.dumps(cfg.to_dict(), allow_nan=False))
    return hashlib.sha256(canonical_json(resolved).encode()).hexdigest()


@dataclass
class Task:
    """One point of a sweep and what to do with it: ``new``, ``resume`` or ``skip``."""

    index: int
    config: RunConfig
    config_hash: str
    action: str
    run_id: str | None = None  # the run resumed or skipped
    status: str | None = None  # its status in the store


@dataclass
class SweepResult:
    """Per point (in grid order): run id, status (finished, diverged, failed, skipped)
    and message; ``resumed`` counts the points continued from a killed run."""

    name: str
    run_ids: list[str | None] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    messages: list[str | None] = field(default_factory=list)
    resumed: int = 0

    finished = property(lambda self: self.statuses.count("finished"))
    diverged = property(lambda self: self.statuses.count("diverged"))
    failed = property(lambda self: self.statuses.count("failed"))
    skipped = property(lambda self: self.statuses.count("skipped"))

    def __str__(self) -> str:
        return (f"sweep {self.name}: {len(self.statuses)} points: {self.finished} finished, "
                f"{self.diverged} diverged, {self.failed} failed, {self.skipped} skipped"
                + (f" ({self.resumed} resumed)" if self.resumed else ""))


def plan_sweep(sweep: Sweep, store: Store) -> list[Task]:
    """What :func:`run_sweep` would do with each point, from the store's current state."""
    runs = store.runs(group=sweep.name)
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for run_id, status, h in zip(runs["id"], runs["status"], runs["config_hash"]):
        by_hash.setdefault(h, []).append((run_id, status))  # oldest first
    tasks = []
    for i, cfg in enumerate(sweep.configs):
        h = config_hash(cfg)
        existing = by_hash.get(h, [])
        done = [r for r in existing if r[1] in DONE]
        if done:
            tasks.append(Task(i, cfg, h, "skip", *done[-1]))
        elif existing:
            tasks.append(Task(i, cfg, h, "resume", *existing[-1]))
        else:
            tasks.append(Task(i, cfg, h, "new"))
    return tasks


def run_sweep(sweep: Sweep, store: Store, workers: int = 0, progress: bool = True,
              threads: int | None = None) -> SweepResult:
    """Train every point not done yet; one summary line per run unless ``progress=False``.

    ``workers=0``: sequentially in this process (each run shows its progress bar on a
    terminal); ``workers=N``: N spawned processes with ``threads`` torch threads each
    (default: the CPUs divided among the workers); a script that uses workers needs the
    ``if __name__ == "__main__":`` guard (spawned workers import the main module)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    tasks = plan_sweep(sweep, store)
    todo = [t for t in tasks if t.action != "skip"]
    result = SweepResult(sweep.name, [t.run_id for t in tasks],
                         ["skipped" if t.action == "skip" else "pending" for t in tasks],
                         [None] * len(tasks), sum(t.action == "resume" for t in tasks))
    if progress:
        print(f"sweep {sweep.name}: {len(tasks)} points, {len(todo)} to train "
              f"({result.resumed} resumed), {len(tasks) - len(todo)} already done", flush=True)

    def record(task: Task, outcome: tuple[str | None, str, str | None]) -> None:
        i = task.index
        result.run_ids[i], result.statuses[i], result.messages[i] = outcome
        if progress:
            done = sum(s not in ("pending", "skipped") for s in result.statuses)
            print(_summary_line(store, task, *outcome, f"[{done}/{len(todo)}]"), flush=True)

    if not todo:
        return result
    if workers == 0:
        for task in todo:
            record(task, _run_task(task, store, None if progress else False))
        return result
    threads = threads or max(1, _cpu_count() // workers)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=torch.set_num_threads, initargs=(threads,))
    try:
        futures = {pool.submit(_work, str(store.root), t.config.to_dict(), t.config_hash,
                               t.action, t.run_id): t for t in todo}
        for future in as_completed(futures):
            task = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # a worker was killed (out of memory, signal)...
                why = ("worker process died" if isinstance(exc, BrokenProcessPool)
                       else type(exc).__name__)
                outcome = (task.run_id or _created_run(store, task.config_hash), "failed",
                           f"{why}: {exc}".splitlines()[0][:500])
            record(task, outcome)
    except BaseException:  # Ctrl-C: stop now; the runs left running resume next time
        _stop(pool)
        raise
    pool.shutdown()
    return result


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what is queued and terminate the workers (a worker survives a
    KeyboardInterrupt in its task and would go on with the next queued point)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


# -- one point -------------------------------------------------------------------------
def _run_task(task: Task, store: Store, progress: bool | None
              ) -> tuple[str | None, str, str | None]:
    """Train or resume one point; (run id, status, message), never raises an Exception."""
    try:
        if task.action == "resume":
            run = resume(store, task.run_id, progress=progress)
        else:
            run = train(task.config, store, progress=progress)
        return run.id, run.status, run.message
    except Exception as exc:  # the trainer has marked the run failed (if it was created)
        message = (f"{type(exc).__name__}: {exc}".splitlines() or ["?"])[0][:500]
        return task.run_id or _created_run(store, task.config_hash), "failed", message


def _work(root: str, config: dict, config_hash_: str, action: str, run_id: str | None):
    """Entry point of a worker process."""
    task = Task(-1, from_dict(config).check(), config_hash_, action, run_id)
    return _run_task(task, Store(root), progress=False)


def _created_run(store: Store, config_hash_: str) -> str | None:
    """The newest run with this config hash (the one a failed ``train`` created), if any."""
    runs = store.find_runs(config_hash=config_hash_)
    return runs[-1].id if runs else None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _summary_line(store: Store, task: Task, run_id: str | None, status: str,
                  message: str | None, prefix: str) -> str:
    parts = [prefix, f"{status:<8}", run_id or task.config.name]
    if run_id is not None:
        acc = store.metrics(runs=[run_id], names=["test/acc"])
        if not acc.empty:
            parts.append(f"test/acc={acc.sort_values('step')['value'].iloc[-1]:.4f}")
    if message and status != "finished":
        parts.append(f"({message})")
    return "  ".join(parts)
