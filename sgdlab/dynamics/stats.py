"""Standard errors for averages along correlated chains: batch means.

A time average of a stationary but autocorrelated series has a variance larger than
var/T by the integrated autocorrelation time. Batch means (Flegal, Haran, Jones 2008) split
each chain's series into B consecutive batches, long against the autocorrelation time, so
the batch averages are nearly independent: the estimate is their mean and its standard
error their standard deviation over sqrt(number of batches). Independent chains add their
batches to the pool.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def batch_means(series, n_batches: int = 20) -> tuple[float, float]:
    """Mean and standard error of a series (T,) or (T, n_chains) by batch means: each
    chain's series split into ``n_batches`` equal consecutive batches (a remainder at the
    end is dropped)."""
    x = series.detach().cpu().numpy() if isinstance(series, torch.Tensor) else np.asarray(series)
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(len(x), -1)
    length = len(x) // n_batches
    if length < 1 or n_batches < 2:
        raise ValueError(f"batch_means: {len(x)} points cannot make {n_batches} batches")
    means = x[: length * n_batches].reshape(n_batches, length, -1).mean(1).reshape(-1)
    return float(means.mean()), float(means.std(ddof=1) / math.sqrt(len(means)))


def lagged_products(path, lag: int, i: int = 0, j: int = 0):
    """The series x_i(t) x_j(t + lag) along ``path`` (T, n_chains, d): its batch mean is the
    lag autocovariance of a process with known mean zero."""
    x = path if isinstance(path, torch.Tensor) else torch.as_tensor(path)
    if lag == 0:
        return x[:, :, i] * x[:, :, j]
    return x[:-lag, :, i] * x[lag:, :, j]
