"""The empirical Fisher matrix as a linear operator (the worked example of a new operator
in docs/architecture.md).

    F = c Σ_i g_i g_iᵀ = K + c N ḡ ḡᵀ,

with g_i the per-example gradients, ḡ their mean, c = 1/N for a mean loss (1 for a sum)
and K the gradient covariance (:class:`~sgdlab.curvature.covariance.CovarianceOperator`),
whose machinery it reuses: F v = K v + c N ḡ (ḡᵀ v) and Tr F = Tr K + c N ‖ḡ‖².
"""

from __future__ import annotations

from torch import Tensor

from sgdlab.curvature.covariance import CovarianceOperator


class EmpiricalFisherOperator(CovarianceOperator):
    """F = c Σ g_i g_iᵀ (arguments and backends as :class:`CovarianceOperator`)."""

    def _matmat(self, V: Tensor) -> Tensor:
        g = self.mean_gradient
        return super()._matmat(V) + self.mean_weight * (V @ g)[:, None] * g[None]

    def exact_trace(self) -> float | None:
        trace_k = super().exact_trace()
        if trace_k is None:
            return None
        return trace_k + self.mean_weight * float(self.mean_gradient.pow(2).sum())
