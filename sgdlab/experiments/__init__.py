"""Experiments: one module per published phenomenon, with its grid, analysis and checks.

>>> from sgdlab.experiments import EXPERIMENTS, run_experiment        # doctest: +SKIP
>>> result = run_experiment("lr-batch-ratio", Store("runs"), scale="smoke")
>>> result.html_path, [c.verdict for c in result.checks]

:data:`EXPERIMENTS` (in :mod:`sgdlab.experiments.registry`) maps each experiment's name to
its instance; :func:`register` adds one's own.
"""

from sgdlab.experiments.base import (
    AnalysisContext,
    Check,
    Experiment,
    ExperimentResult,
    build_configs,
    verdict,
)
from sgdlab.experiments.registry import EXPERIMENTS, get_experiment, register
from sgdlab.experiments.runner import format_checks, run_experiment

__all__ = ["EXPERIMENTS", "AnalysisContext", "Check", "Experiment", "ExperimentResult",
           "build_configs", "format_checks", "get_experiment", "register", "run_experiment",
           "verdict"]
