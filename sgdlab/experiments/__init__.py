"""Experiments: one module per published phenomenon, with its grid, analysis and checks.

>>> from sgdlab.experiments import EXPERIMENTS, run_experiment        # doctest: +SKIP
>>> result = run_experiment("lr-batch-ratio", Store("runs"), scale="smoke")
>>> result.html_path, [c.verdict for c in result.checks]

:data:`EXPERIMENTS` (in :mod:`sgdlab.experiments.registry`) maps each experiment's name to
its instance; :func:`register` adds one's own.
"""

from sgdlab.lazy import lazy_names

_EXPORTS = {
    "AnalysisContext": ".base", "Check": ".base", "Experiment": ".base",
    "ExperimentResult": ".base", "build_configs": ".base", "verdict": ".base",
    "EXPERIMENTS": ".registry", "get_experiment": ".registry", "register": ".registry",
    "format_checks": ".runner", "run_experiment": ".runner",
}
__all__ = sorted(_EXPORTS)
# names load their module on first use: `sgdlab --help` imports neither the experiments
# nor pandas
__getattr__ = lazy_names(__name__, _EXPORTS)
