"""Curvature matrices by name: ``matrix=`` in :func:`curvature_operator` and the
model-level functions. Adding one: a module with a :class:`ModelOperator` subclass and one
line in :data:`OPERATORS` (or :func:`register_operator` from one's own code)."""

from __future__ import annotations

from typing import Any

from torch import nn

from sgdlab.curvature.covariance import CovarianceOperator
from sgdlab.curvature.fisher import EmpiricalFisherOperator
from sgdlab.curvature.ggn import GGNOperator
from sgdlab.curvature.hessian import HessianOperator
from sgdlab.curvature.model_function import Data, LossFn, ModelOperator
from sgdlab.curvature.options import CurvatureOptions

OPERATORS: dict[str, type[ModelOperator]] = {
    "hessian": HessianOperator,
    "ggn": GGNOperator,
    "covariance": CovarianceOperator,
    "fisher": EmpiricalFisherOperator,
}


def register_operator(name: str, cls: type[ModelOperator]) -> type[ModelOperator]:
    """Make ``matrix=name`` build ``cls`` (a :class:`ModelOperator` subclass)."""
    if not (isinstance(cls, type) and issubclass(cls, ModelOperator)):
        raise TypeError(f"register_operator({name!r}): {cls!r} is not a ModelOperator subclass")
    OPERATORS[name] = cls
    return cls


def curvature_operator(model: nn.Module, loss_fn: LossFn, data: Data, matrix: str = "hessian",
                       options: CurvatureOptions | None = None, **fields: Any) -> ModelOperator:
    """The operator of the curvature ``matrix`` ("hessian", "ggn", "covariance", "fisher",
    or a registered name) of ``loss_fn`` over ``data``, built with ``options`` / ``fields``
    (:class:`~sgdlab.curvature.CurvatureOptions`)."""
    if matrix not in OPERATORS:
        raise ValueError(f"matrix must be one of {tuple(OPERATORS)}, got {matrix!r}")
    return OPERATORS[matrix](model, loss_fn, data, CurvatureOptions.build(options, **fields))
