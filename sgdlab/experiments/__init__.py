"""Experiments: one module per published phenomenon, with its grid, analysis and checks.

>>> from sgdlab.experiments import EXPERIMENTS, run_experiment        # doctest: +SKIP
>>> result = run_experiment("lr-batch-ratio", Store("runs"), scale="smoke")
>>> result.html_path, [c.verdict for c in result.checks]

The registry :data:`EXPERIMENTS` maps each experiment's name to an instance. Each module
listed in ``_MODULES`` defines ``EXPERIMENT = MyExperiment()`` (or, failing that, its
:class:`Experiment` subclasses with a ``name`` are instantiated and registered).
"""

from __future__ import annotations

import importlib

from sgdlab.experiments.base import (
    AnalysisContext,
    Check,
    Experiment,
    ExperimentResult,
    build_configs,
    format_checks,
    get_experiment,
    run_experiment,
    verdict,
)

EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Add an experiment instance to :data:`EXPERIMENTS` under its name."""
    EXPERIMENTS[exp.name] = exp
    return exp


_MODULES = ("lr_batch_ratio", "edge_of_stability", "sharpest_directions", "break_even")
for _module in _MODULES:
    try:
        _mod = importlib.import_module(f"sgdlab.experiments.{_module}")
    except ModuleNotFoundError as _exc:  # a module still being written
        if _exc.name != f"sgdlab.experiments.{_module}":
            raise
        continue
    _found = [getattr(_mod, "EXPERIMENT", None)] if hasattr(_mod, "EXPERIMENT") else [
        _obj() for _obj in vars(_mod).values()
        if isinstance(_obj, type) and issubclass(_obj, Experiment) and _obj is not Experiment
        and _obj.__module__ == _mod.__name__ and _obj.name]
    for _exp in _found:
        register(_exp)

__all__ = ["EXPERIMENTS", "AnalysisContext", "Check", "Experiment", "ExperimentResult",
           "build_configs", "format_checks", "get_experiment", "register", "run_experiment",
           "verdict"]
