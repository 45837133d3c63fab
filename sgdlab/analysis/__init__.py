"""Analyses of stored runs: rebuild a finished run (:mod:`sgdlab.train.restore`), compute on
it with a numerical layer, store the arrays in its folder and redraw its report.

>>> from sgdlab.analysis import slice_run, interpolate_runs, trajectory_run  # doctest: +SKIP
>>> slice_run(Store("runs"), "fashion", dims=2).path       # arrays/landscape-plane-random/...
>>> interpolate_runs(Store("runs"), "fashion-a", "fashion-b").result.barrier

The package sits above ``train``, ``store``, ``report`` and the numerical layers, beside
``experiments`` (docs/architecture.md): the numerical layers know nothing of runs, and the
report only reads what this package stored. ``sgdlab landscape RUN ...`` is its command
(:mod:`sgdlab.analysis.cli`). Names are imported lazily so that ``sgdlab --help`` does not
import torch.
"""

from sgdlab.lazy import lazy_names

_EXPORTS = {
    "HistorySize": ".landscape", "Written": ".landscape", "evaluation_data": ".landscape",
    "history": ".landscape", "history_size": ".landscape", "interpolate_runs": ".landscape",
    "slice_run": ".landscape", "trajectory_run": ".landscape",
    "add_landscape_commands": ".cli",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_names(__name__, _EXPORTS)
