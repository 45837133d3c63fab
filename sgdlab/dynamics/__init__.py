"""Escape from minima and the discreteness of SGD: controlled landscapes, thousands of
chains as batched tensors, SGD beside its SDE, first-passage times and their theory.

Knows nothing of sgdlab's training loop (imports only torch, numpy, scipy, sgdlab.errors
and sgdlab.curvature). Time is t = h * steps for every scheme (t = eta * steps for SGD)::

    V = DoubleWell(barrier=1.0, curvature=8.0)          # minima ±1, saddle 0
    problem = FiniteSum.designed(V, cov=40.0, n=1000)   # per-example gradient noise C = 40
    start, target = between_minima(V)                   # from -1 to past +1
    run = first_passage(sgd(problem, lr=0.01, batch_size=1), start, target,
                        n_chains=2000, max_time=5000.0)
    run.estimate()                                       # mean escape time and its SE
    T = 0.01 * 40.0 / (2 * 1)                            # eta C / (2S) = 0.2
    eyring_kramers(V, V.minima[0], V.saddles[0], T).tau  # 164.8
    mfpt_1d(V, -1.0, 1.0, T)                             # 182.4, exact for the SDE
    sde(V, lr=0.01, noise_cov=problem.minibatch_covariance(1), dt=1e-3)  # its SDE

Networks: :mod:`sgdlab.dynamics.networks` (many chains of one small model under vmap).
"""

from sgdlab.dynamics.finite_sum import FiniteSum, designed_offsets
from sgdlab.dynamics.passage import (
    Ball,
    Halfspace,
    Passage,
    between_minima,
    first_passage,
    sample_path,
)
from sgdlab.dynamics.potentials import (
    CallablePotential,
    DoubleWell,
    Polynomial1D,
    Potential,
    Quadratic,
    SaddleSurface,
    critical_point,
    tilted_double_well,
)
from sgdlab.dynamics.schemes import (
    ExactOU,
    GaussianNoise,
    MinibatchNoise,
    NoisyGradientScheme,
    SVAGNoise,
    diffusion,
    gd_matching,
    noisy_gd,
    sde,
    sgd,
    svag,
)
from sgdlab.dynamics.stats import batch_means, lagged_products
from sgdlab.dynamics.theory import (
    KramersPrediction,
    arrhenius_fit,
    discrete_mfpt_1d,
    escape_efficiency,
    eyring_kramers,
    linear_chain_autocovariance,
    linear_chain_stationary_covariance,
    mfpt_1d,
    mfpt_grid_2d,
    ou_autocovariance,
    ou_stationary_covariance,
)

__all__ = [
    "Ball", "CallablePotential", "DoubleWell", "ExactOU", "FiniteSum", "GaussianNoise",
    "Halfspace", "KramersPrediction", "MinibatchNoise", "NoisyGradientScheme", "Passage",
    "Polynomial1D", "Potential", "Quadratic", "SVAGNoise", "SaddleSurface", "arrhenius_fit",
    "batch_means", "between_minima", "critical_point", "designed_offsets", "diffusion",
    "discrete_mfpt_1d", "escape_efficiency", "eyring_kramers", "first_passage", "gd_matching",
    "lagged_products",
    "linear_chain_autocovariance", "linear_chain_stationary_covariance", "mfpt_1d", "mfpt_grid_2d",
    "noisy_gd", "ou_autocovariance", "ou_stationary_covariance", "sample_path", "sde", "sgd",
    "svag", "tilted_double_well",
]
