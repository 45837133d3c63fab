"""Hard spectra for the curvature algorithms: repeated, clustered and zero eigenvalues.

Two kinds of cases, each with its exact float64 answer:

* ``MATRICES``: dense symmetric matrices Q diag(λ) Qᵀ (Q a seeded random rotation) whose
  wanted eigenvalues repeat (multiplicity 2-4) at the top ("LA"), at the bottom ("SA"),
  in the middle of the wanted list, for "LM" on the negative side, in clusters 1e-8 wide,
  or are exact zeros;
* ``NETWORKS``: small models whose symmetry makes Hessian and Gauss–Newton eigenvalues
  repeat exactly (Schur's lemma: the loss is invariant under a group acting on the
  parameters, and the parameter point is fixed by it):
  ``tied``: one linear map applied twice (weight and bias tied), data closed under the
  48 signed permutations of R³ (targets equivariant), at W = c I, b = 0: every eigenvalue
  of H and GGN has multiplicity 3;
  ``shared``: one linear layer applied to four input slices, a head over their
  concatenation with equal blocks, data closed under the 24 slice permutations (slices
  summing to zero): the top eigenvalue of H and GGN has multiplicity 3 (the 3-dimensional
  irreducible representation of S4 on the head blocks);
  ``units_one_example``: a tanh MLP whose three hidden units are equal, cross-entropy of
  one example: a double negative Hessian eigenvalue (S3 acting on the units), a double
  positive one, and a Gauss–Newton matrix of rank 2 (zeros for "SA").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rotate(eigs: Tensor, seed: int = 0) -> Tensor:
    """Q diag(eigs) Qᵀ with Q a seeded random orthogonal matrix (float64)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return (q * eigs) @ q.T


def _f64(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


@dataclass(frozen=True)
class MatrixCase:
    """A spectrum, what to ask for, and the largest multiplicity among the wanted values."""

    name: str
    eigenvalues: Tensor
    which: str
    k: int
    multiplicity: int

    def matrix(self) -> Tensor:
        return rotate(self.eigenvalues, seed=len(self.name))


def _bulk(n: int, lo: float, hi: float, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _matrix_cases() -> dict[str, MatrixCase]:
    cases = []
    for m in (2, 3, 4):
        rep = torch.ones(m, dtype=torch.float64)
        cases += [
            MatrixCase(f"top{m}", torch.cat([5 * rep, _bulk(200, -1, 3)]), "LA", m + 1, m),
            MatrixCase(
                f"middle{m}", torch.cat([_f64(7.0), 6 * rep, _f64(5.0), _bulk(200, -1, 3)]),
                "LA", m + 2, m,
            ),
            MatrixCase(f"bottom{m}", torch.cat([-5 * rep, _bulk(200, -3, 1)]), "SA", m + 1, m),
            MatrixCase(
                f"lm_negative{m}",
                torch.cat([_f64(7.0), -6 * rep, _f64(5.0), _bulk(200, -3, 3)]), "LM", m + 2, m,
            ),
            MatrixCase(
                f"cluster{m}",
                torch.cat([5 + 1e-8 * torch.arange(m, dtype=torch.float64), _bulk(200, -1, 3)]),
                "LA", m + 1, m,
            ),
        ]
    zeros = torch.cat([_f64(5.0, 4.0, 3.0), torch.zeros(60, dtype=torch.float64)])
    cases += [
        MatrixCase("zeros_sa", zeros, "SA", 3, 3),  # PSD of rank 3: the bottom is 0 (x60)
        MatrixCase("zeros_la", zeros, "LA", 5, 2),  # the top 3, then two zeros
    ]
    return {c.name: c for c in cases}


MATRICES = _matrix_cases()


def issue_matrix() -> Tensor:
    """Q diag(3,3,3, 2,2,2, 1,1,1, .5,.5,.5) Qᵀ (the report's 12 x 12 example)."""
    return rotate(_f64(3, 3, 3, 2, 2, 2, 1, 1, 1, 0.5, 0.5, 0.5), seed=0)


# --- networks -------------------------------------------------------------------------


@dataclass
class NetworkCase:
    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    x: Tensor
    y: Tensor
    multiplicity: int  # of the repeated wanted eigenvalues (the block size they need)

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        return self.x, self.y


class Tied(nn.Module):
    """x ↦ L(tanh(L x)): ``linear2`` shares ``linear1``'s weight and bias (tied weights)."""

    def __init__(self, d: int = 3):
        super().__init__()
        self.linear1 = nn.Linear(d, d)
        self.linear2 = nn.Linear(d, d)
        self.linear2.weight, self.linear2.bias = self.linear1.weight, self.linear1.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(torch.tanh(self.linear1(x)))


class Shared(nn.Module):
    """One linear layer applied to each of four input slices; a head on the concatenation."""

    def __init__(self, d: int = 3, h: int = 4, out: int = 3):
        super().__init__()
        self.d = d
        self.shared = nn.Linear(d, h, bias=False)
        self.head = nn.Linear(4 * h, out)

    def forward(self, x: Tensor) -> Tensor:
        z = torch.tanh(self.shared(x.reshape(len(x), 4, self.d)))
        return self.head(z.reshape(len(x), -1))


def _signed_permutations(d: int = 3) -> Tensor:
    mats = []
    for perm in itertools.permutations(range(d)):
        for signs in itertools.product((1.0, -1.0), repeat=d):
            m = torch.zeros(d, d, dtype=torch.float64)
            m[range(d), list(perm)] = torch.tensor(signs, dtype=torch.float64)
            mats.append(m)
    return torch.stack(mats)


def _built(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        return factory().double()


def tied(seed: int = 1, c: float = 0.5) -> NetworkCase:
    g = torch.Generator().manual_seed(seed)
    model = _built(Tied)
    with torch.no_grad():
        model.linear1.weight.copy_(c * torch.eye(3, dtype=torch.float64))
        model.linear1.bias.zero_()
    base = torch.randn(3, 3, generator=g, dtype=torch.float64)
    x = torch.einsum("gij,nj->gni", _signed_permutations(), base).reshape(-1, 3)
    return NetworkCase("tied", model, F.mse_loss, x, 1.5 * torch.sin(2 * x), 3)


def shared(seed: int = 0, n: int = 6) -> NetworkCase:
    g = torch.Generator().manual_seed(seed)
    model = _built(Shared)
    with torch.no_grad():
        model.shared.weight.copy_(torch.randn(4, 3, generator=g, dtype=torch.float64))
        block = 0.3 * torch.randn(3, 4, generator=g, dtype=torch.float64)
        model.head.weight.copy_(block.repeat(1, 4))  # equal blocks: a point fixed by S4
        model.head.bias.copy_(0.1 * torch.randn(3, generator=g, dtype=torch.float64))
    u = 1.5 * torch.randn(n, 4, 3, generator=g, dtype=torch.float64)
    u = u - u.mean(1, keepdim=True)
    x = torch.cat([u[:, list(p)] for p in itertools.permutations(range(4))]).reshape(-1, 12)
    y = torch.randint(0, 3, (n,), generator=g).repeat(24)
    return NetworkCase("shared", model, F.cross_entropy, x, y, 3)


def units_one_example(seed: int = 1) -> NetworkCase:
    g = torch.Generator().manual_seed(seed)
    model = _built(lambda: nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(1, 4, generator=g, dtype=torch.float64).repeat(3, 1))
        model[0].bias.fill_(0.3)
        model[2].weight.copy_(2 * torch.randn(3, 1, generator=g, dtype=torch.float64).repeat(1, 3))
        model[2].bias.zero_()
    x = 2 * torch.randn(1, 4, generator=g, dtype=torch.float64)
    return NetworkCase("units_one_example", model, F.cross_entropy, x, torch.tensor([0]), 2)


NETWORKS: dict[str, Callable[[], NetworkCase]] = {
    "tied": tied,
    "shared": shared,
    "units_one_example": units_one_example,
}
