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

The tasks go to an executor (:mod:`sgdlab.sweep.executors`): ``workers=0`` trains them in
this process, ``workers=N >= 1`` in N worker processes; or pass ``executor=``. An
exception in one point marks its run failed (the trainer writes the message) and the sweep
goes on; a diverged run is a result, not an error; a worker that dies leaves its run
"killed" (resumed by the next sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sgdlab.store import Store, config_hash
from sgdlab.sweep.executors import Executor, InProcess, Outcome, Task, WorkerProcesses
from sgdlab.sweep.grid import Sweep

DONE = ("finished", "diverged")


@dataclass
class SweepResult:
    """Per point (in grid order): run id, status (finished, diverged, failed, killed,
    skipped) and message; ``resumed`` counts the points continued from a killed run."""

    name: str
    run_ids: list[str | None] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    messages: list[str | None] = field(default_factory=list)
    resumed: int = 0

    finished = property(lambda self: self.statuses.count("finished"))
    diverged = property(lambda self: self.statuses.count("diverged"))
    failed = property(lambda self: self.statuses.count("failed"))
    killed = property(lambda self: self.statuses.count("killed"))
    skipped = property(lambda self: self.statuses.count("skipped"))

    def __str__(self) -> str:
        return (f"sweep {self.name}: {len(self.statuses)} points: {self.finished} finished, "
                f"{self.diverged} diverged, {self.failed} failed, "
                + (f"{self.killed} killed, " if self.killed else "") + f"{self.skipped} skipped"
                + (f" ({self.resumed} resumed)" if self.resumed else ""))


def plan_sweep(sweep: Sweep, store: Store) -> list[Task]:
    """What :func:`run_sweep` would do with each point, from the store's current state."""
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for r in store.run_records(group=sweep.name):  # oldest first
        by_hash.setdefault(r["config_hash"], []).append((r["id"], r["status"]))
    tasks = []
    for i, cfg in enumerate(sweep.configs):
        h = config_hash(cfg.to_dict())
        existing = by_hash.get(h, [])
        done = [r for r in existing if r[1] in DONE]
        if done:
            tasks.append(Task(i, cfg, h, "skip", *done[-1]))
        elif existing:
            tasks.append(Task(i, cfg, h, "resume", *existing[-1]))
        else:
            tasks.append(Task(i, cfg, h, "new"))
    return tasks


EXECUTORS = ("inline", "processes", "ensemble", "ray")


def make_executor(name: str | None = None, workers: int = 0, threads: int | None = None,
                  progress: bool = True, **options) -> Executor:
    """An executor by name: ``inline`` (this process, one run after another), ``processes``
    (``workers`` worker processes, at least 1), ``ensemble`` (vectorized stacks; options
    ``backend``, ``max_members``), ``ray`` (options ``address``, ``cpus``, ``gpus``,
    ``retries``). ``None``: inline for ``workers=0``, else processes."""
    if name is None:
        name = "inline" if workers == 0 else "processes"
    if name == "inline":
        return InProcess(None if progress else False)
    if name == "processes":
        return WorkerProcesses(max(workers, 1), threads)
    if name == "ensemble":
        from sgdlab.sweep.ensemble import Ensemble

        fallback = WorkerProcesses(workers, threads) if workers else None
        return Ensemble(fallback=fallback, **options)
    if name == "ray":
        from sgdlab.sweep.ray_executor import RayExecutor

        return RayExecutor(threads=threads, **options)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")


def run_sweep(sweep: Sweep, store: Store, workers: int = 0, progress: bool = True,
              threads: int | None = None, executor: Executor | str | None = None
              ) -> SweepResult:
    """Train every point not done yet; one summary line per run unless ``progress=False``.

    ``executor`` (an :class:`Executor` or a name for :func:`make_executor`; default:
    :class:`InProcess` for ``workers=0``, each run showing its progress bar on a terminal;
    :class:`WorkerProcesses` with ``threads`` torch threads each for ``workers=N``) trains
    the tasks."""
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
    if not todo:
        return result
    if not isinstance(executor, Executor):
        executor = make_executor(executor, workers, threads, progress)
    with executor:  # Ctrl-C: the executor stops; runs left running resume next time
        for task, outcome in executor.run(todo, store):
            i = task.index
            result.run_ids[i], result.statuses[i] = outcome.run_id, outcome.status
            result.messages[i] = outcome.message
            if progress:
                done = sum(s not in ("pending", "skipped") for s in result.statuses)
                print(_summary_line(store, task, outcome, f"[{done}/{len(todo)}]"), flush=True)
    return result


def _summary_line(store: Store, task: Task, outcome: Outcome, prefix: str) -> str:
    run_id, status, message = outcome.run_id, outcome.status, outcome.message
    parts = [prefix, f"{status:<8}", run_id or task.config.name]
    if run_id is not None and (acc := store.last_metrics(run_id, ["test/acc"]).get("test/acc")):
        parts.append(f"test/acc={acc[1]:.4f}")
    if message and status != "finished":
        parts.append(f"({message})")
    return "  ".join(parts)
