"""The experiments sgdlab ships, listed explicitly, and :func:`register` for one's own.

Adding an experiment: a module defining ``EXPERIMENT = MyExperiment()`` and one line in
:data:`EXPERIMENTS` below.
"""

from __future__ import annotations

from sgdlab.errors import SgdlabError
from sgdlab.experiments import (
    break_even,
    capacity,
    edge_of_stability,
    escape_times,
    flat_minima,
    intrinsic_dimension,
    iterative_inference,
    lr_batch_ratio,
    memorization,
    mode_connectivity,
    sde_validity,
    sharp_minima_escape,
    sharpest_directions,
    stiffness,
    tower_of_colanders,
)
from sgdlab.experiments.base import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    exp.name: exp
    for exp in (
        lr_batch_ratio.EXPERIMENT,
        sharpest_directions.EXPERIMENT,
        break_even.EXPERIMENT,
        edge_of_stability.EXPERIMENT,
        memorization.EXPERIMENT,
        capacity.EXPERIMENT,
        stiffness.EXPERIMENT,
        iterative_inference.EXPERIMENT,
        escape_times.EXPERIMENT,
        sharp_minima_escape.EXPERIMENT,
        sde_validity.EXPERIMENT,
        mode_connectivity.EXPERIMENT,
        intrinsic_dimension.EXPERIMENT,
        tower_of_colanders.EXPERIMENT,
        flat_minima.EXPERIMENT,
    )
}


def register(exp: Experiment) -> Experiment:
    """Add an experiment instance (one's own) to :data:`EXPERIMENTS` under its name."""
    if not isinstance(exp, Experiment) or not exp.name:
        raise TypeError("register() takes an Experiment instance with a name")
    EXPERIMENTS[exp.name] = exp
    return exp


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise SgdlabError(f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})")
    return EXPERIMENTS[name]
