"""Sweeps: grids of runs expanded from a TOML grid file, trained in-process or in worker
processes (executors), resumable after a kill, and queried as one group.

>>> sweep = load_grid("lr-sweep.toml")                       # doctest: +SKIP
>>> result = run_sweep(sweep, Store("runs"), workers=4)      # skips finished points
>>> sweep_table(Store("runs"), sweep.name)                   # swept params + final metrics

Modules: :mod:`~sgdlab.sweep.grid` (file format, expansion, validation),
:mod:`~sgdlab.sweep.execute` (skip / resume / train), :mod:`~sgdlab.sweep.executors`
(in-process, worker processes; the interface for others),
:mod:`~sgdlab.sweep.query` (tables and curves), :mod:`~sgdlab.sweep.cli` (commands).
Names are imported lazily so that ``sgdlab --help`` does not import torch.
"""

from sgdlab.lazy import lazy_names

_EXPORTS = {
    "Sweep": ".grid", "expand_grid": ".grid", "load_grid": ".grid", "make_sweep": ".grid",
    "SweepResult": ".execute", "Task": ".executors", "plan_sweep": ".execute",
    "run_sweep": ".execute", "make_executor": ".execute", "Ensemble": ".ensemble",
    "Executor": ".executors", "InProcess": ".executors", "WorkerProcesses": ".executors",
    "Outcome": ".executors",
    "sweep_table": ".query", "sweep_curves": ".query", "swept_keys": ".query",
    "add_sweep_commands": ".cli",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_names(__name__, _EXPORTS)
