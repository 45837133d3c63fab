"""Experiments: one module per published phenomenon, with its grid, analysis and checks.

>>> from sgdlab.experiments import EXPERIMENTS, run_experiment        # doctest: +SKIP
>>> result = run_experiment("lr-batch-ratio", Store("runs"), scale="smoke")
>>> result.html_path, [c.verdict for c in result.checks]

:data:`EXPERIMENTS` (in :mod:`sgdlab.experiments.registry`) maps each experiment's name to
its instance; :func:`register` adds one's own.
"""

from importlib import import_module

_EXPORTS = {
    "AnalysisContext": "base", "Check": "base", "Experiment": "base",
    "ExperimentResult": "base", "build_configs": "base", "verdict": "base",
    "EXPERIMENTS": "registry", "get_experiment": "registry", "register": "registry",
    "format_checks": "runner", "run_experiment": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Names load their module on first use, so that ``sgdlab --help`` imports neither the
    experiments nor pandas."""
    if name in _EXPORTS:
        return getattr(import_module(f"sgdlab.experiments.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sgdlab.experiments' has no attribute {name!r}")
