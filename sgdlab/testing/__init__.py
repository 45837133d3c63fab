"""Exact references and tiny cases for testing curvature code (shipped with the package)."""

from sgdlab.testing.cases import CASES, Case, make_case
from sgdlab.testing.reference import (
    dense_ggn,
    dense_hessian,
    eigh,
    exact_covariance,
    mean_loss_function,
    per_sample_gradients,
)

__all__ = [
    "CASES",
    "Case",
    "dense_ggn",
    "dense_hessian",
    "eigh",
    "exact_covariance",
    "make_case",
    "mean_loss_function",
    "per_sample_gradients",
]
