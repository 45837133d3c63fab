"""Curvature of a loss: Hessian, Gauss–Newton, gradient-covariance and empirical Fisher
operators, and the algorithms that read their spectra (Lanczos, power iteration,
Hutchinson / Hutch++ traces, stochastic Lanczos quadrature densities). Knows nothing
about training.

Model level (build the operator, run, time)::

    res = hessian_eigs(model, loss_fn, (x, y), k=5, tol=1e-4)
    res2 = hessian_eigs(model, loss_fn, (x, y), k=5, init=res)  # warm start
    tr = hessian_trace(model, loss_fn, (x, y), rtol=1e-2)        # Hutch++ ± stderr

Operator level (pure functions of an operator and a budget)::

    op = curvature_operator(model, loss_fn, (x, y), "ggn", CurvatureOptions(chunk_size=256))
    eigs(op, k=5, tol=1e-6); trace(op, max_products=300); density(op, num_steps=80)

A new curvature matrix is one :class:`ModelOperator` subclass and one line in
:data:`OPERATORS` (docs/architecture.md shows the empirical Fisher as the example).
"""

from sgdlab.curvature.algorithms import density, eigs, trace
from sgdlab.curvature.api import (
    covariance_density,
    covariance_eigs,
    covariance_trace,
    hessian_density,
    hessian_eigs,
    hessian_trace,
)
from sgdlab.curvature.covariance import CovarianceOperator
from sgdlab.curvature.density import slq
from sgdlab.curvature.fisher import EmpiricalFisherOperator
from sgdlab.curvature.flat import flatten, unflatten
from sgdlab.curvature.ggn import GGNOperator
from sgdlab.curvature.hessian import HessianOperator
from sgdlab.curvature.lanczos import lanczos
from sgdlab.curvature.linop import DenseOperator, LinearOperator
from sgdlab.curvature.model_function import CurvatureMemoryWarning, ModelOperator
from sgdlab.curvature.options import CurvatureOptions
from sgdlab.curvature.power import power_iteration
from sgdlab.curvature.registry import OPERATORS, curvature_operator, register_operator
from sgdlab.curvature.results import DensityResult, EigResult, TraceResult
from sgdlab.curvature.trace import hutchinson, hutchpp

__all__ = [
    "OPERATORS",
    "CovarianceOperator",
    "CurvatureMemoryWarning",
    "CurvatureOptions",
    "DenseOperator",
    "DensityResult",
    "EigResult",
    "EmpiricalFisherOperator",
    "GGNOperator",
    "HessianOperator",
    "LinearOperator",
    "ModelOperator",
    "TraceResult",
    "covariance_density",
    "covariance_eigs",
    "covariance_trace",
    "curvature_operator",
    "density",
    "eigs",
    "flatten",
    "hessian_density",
    "hessian_eigs",
    "hessian_trace",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "power_iteration",
    "register_operator",
    "slq",
    "trace",
    "unflatten",
]
