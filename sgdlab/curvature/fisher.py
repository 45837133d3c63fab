"""The empirical Fisher matrix as a linear operator (the worked example of a new operator
in docs/architecture.md).

    F = (1/N) Σ_i g_i g_iᵀ = K + ḡ ḡᵀ,

with g_i the per-example gradients, ḡ their mean and K the gradient covariance
(:class:`~sgdlab.curvature.covariance.CovarianceOperator`), whose machinery it reuses:
F v = K v + ḡ (ḡᵀ v) and Tr F = Tr K + ‖ḡ‖².
"""

from __future__ import annotations

from torch import Tensor

from sgdlab.curvature.covariance import CovarianceOperator


class EmpiricalFisherOperator(CovarianceOperator):
    """F = (1/N) Σ g_i g_iᵀ (arguments and backends as :class:`CovarianceOperator`)."""

    def _matmat(self, V: Tensor) -> Tensor:
        g = self.mean_gradient
        return super()._matmat(V) + (V @ g)[:, None] * g[None]

    def exact_trace(self) -> float | None:
        trace_k = super().exact_trace()
        return None if trace_k is None else trace_k + float(self.mean_gradient.pow(2).sum())
