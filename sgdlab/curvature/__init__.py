"""Curvature of a loss: Hessian, Gauss–Newton and gradient-covariance operators, and the
algorithms that read their spectra (Lanczos, power iteration, Hutchinson / Hutch++ traces,
stochastic Lanczos quadrature densities). Knows nothing about training.

Model level (build the operator, run, time)::

    res = hessian_eigs(model, loss_fn, (x, y), k=5, tol=1e-4)
    res2 = hessian_eigs(model, loss_fn, (x, y), k=5, init=res)  # warm start
    tr = hessian_trace(model, loss_fn, (x, y), rtol=1e-2)        # Hutch++ ± stderr

Operator level (pure functions of an operator and a budget)::

    op = HessianOperator(model, loss_fn, (x, y))
    lanczos(op, k=5, tol=1e-6); hutchpp(op, max_products=300); slq(op, num_steps=80)
"""

from sgdlab.curvature.api import (
    curvature_operator,
    hessian_density,
    hessian_eigs,
    hessian_trace,
)
from sgdlab.curvature.covariance import CovarianceOperator
from sgdlab.curvature.covariance_api import (
    covariance_density,
    covariance_eigs,
    covariance_trace,
)
from sgdlab.curvature.density import slq
from sgdlab.curvature.flat import flatten, unflatten
from sgdlab.curvature.ggn import GGNOperator
from sgdlab.curvature.hessian import HessianOperator
from sgdlab.curvature.lanczos import lanczos
from sgdlab.curvature.linop import DenseOperator, LinearOperator
from sgdlab.curvature.power import power_iteration
from sgdlab.curvature.results import DensityResult, EigResult, TraceResult
from sgdlab.curvature.trace import hutchinson, hutchpp

__all__ = [
    "CovarianceOperator",
    "DenseOperator",
    "DensityResult",
    "EigResult",
    "GGNOperator",
    "HessianOperator",
    "LinearOperator",
    "TraceResult",
    "covariance_density",
    "covariance_eigs",
    "covariance_trace",
    "curvature_operator",
    "flatten",
    "hessian_density",
    "hessian_eigs",
    "hessian_trace",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "power_iteration",
    "slq",
    "unflatten",
]
