"""Block Lanczos with full reorthogonalization, thick restart (Krylov–Schur form) and
deflation restarts after an invariant subspace.

We keep an orthonormal basis V (j, P), its images AV = A V (stored, so true residuals
cost no extra product), the projected matrix H = V A Vᵀ (j, j) and a pending block Q
(b, P) orthogonal to V with the Krylov relation (column form)

    A V = V H + Q C,        C (b, j).

One step multiplies the pending block: with M = Q A Qᵀ (note Vᵀ A Q = Cᵀ),

    W = A Q − C V − M Q,       W = Rᵀ Q_next (Gram–Schmidt),
    V ← [V; Q],  H ← [[H, Cᵀ], [C, M]],  C ← [0, R].

Rayleigh–Ritz: H = S Θ Sᵀ; the Ritz pair (θ_i, y_i = Sᵀ_i V) has residual
A y_i − θ_i y_i = Q_nextᵀ (C s_i), so ‖r_i‖ = ‖C s_i‖ — for a single vector (b = 1) this
is the classical estimate |β_m s_{m,i}|; it is confirmed by the true residual
‖(AV)ᵀ s_i − θ_i y_i‖ before stopping. When the basis reaches ``max_basis`` rows we
restart thickly: keep the p best Ritz vectors (V ← Sᵀ_p V, AV ← Sᵀ_p AV, H ← diag Θ_p,
C ← C S_p), which preserves the relation.

Repeated eigenvalues. A Krylov space grown from b vectors holds, of each eigenspace,
only the projections of those b vectors: an eigenvalue of multiplicity m > b shows at
most b copies, and the missing ones are invisible from inside the space (eigenvalues
closer than the tolerance behave alike; within a few tolerances, a Ritz value may settle
on the neighbour of a wanted value, as in any Lanczos method). New copies can only come
from new random vectors, so the basis is split into *sweeps*. The current sweep is the
Krylov space of the latest start block; when it becomes invariant (every one of its Ritz
pairs passes the test, or its coupling ‖C‖ to the next block is below tol times the
wanted values' scale or 1e-8 ‖A‖; exactly: W vanishes) it is complete: its pairs are
locked as eigenpairs (kept in the basis, so later products are deflated by the
reorthogonalization) and, if one of them is strictly better than the k-th wanted value,
a fresh random block orthogonal to everything found starts a new sweep. Without that
restart the zero coupling of the replacement block would make every residual estimate 0
and stop the iteration before the block was ever used. A restarted sweep ends the
iteration only once its best Ritz value has converged without being strictly better than
the k-th wanted one: its random start sees every eigenvalue left unexplored, so none of
them can be wanted. A restarted sweep that does find a wanted value runs on until it is
complete (one start vector sees one copy, and more may hide). After a complete sweep
every unexplored eigenvalue is a copy of one of its values, so a stop on the budget
flags a pair only if its value is at least the best value of the last complete sweep.
After a restart, the stop test and the result use the Rayleigh–Ritz pairs of the whole
stored basis (H = V (AV)ᵀ, no product), which puts back the couplings that locking
dropped. What "converged" certifies is in :func:`lanczos`.

Cold start: one random vector (b = 1), the cheapest in products for well separated
extremal eigenvalues. Warm start (``init``, previous vectors U (m, P)): by default
single-vector Lanczos from v0 = Σ_i u_i + (10% random part). If U spans an invariant
subspace, K_m(A, v0) = span(U) after m steps, so the pairs are recovered in about m
products; the random part lets eigenvectors that entered the top-k since be found.
With ``block_size > 1`` the block U itself starts block Lanczos (Rayleigh–Ritz on span(U)
first, then the block Krylov space K(A, U), which contains the iterates of LOBPCG and
subspace iteration from U); a block U that spans an invariant subspace is a complete
sweep after one step, and a fresh block must then show that nothing outside span(U) is
wanted (it converges the best value there, a cost the single-vector start does not
have). We measured both on a CNN's Hessian (top-5, checkpoints 50
SGD steps apart, overlaps 0.65-0.96): cold 16-18 products, single-vector warm 13-15,
block warm 25-30 — a block costs m products per step, which only pays when products of
a block are much cheaper than m single ones.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from sgdlab.curvature._random import make_generator, randn
from sgdlab.curvature.linop import LinearOperator
from sgdlab.curvature.model_function import default_memory_budget
from sgdlab.curvature.results import EigResult

WHICH = ("LA", "SA", "LM")

# Residuals are relative to max(|θ|, ZERO_FLOOR · ‖A‖): eigenvalues below 1e-4 of the
# largest in magnitude are certified to an absolute tol · 1e-4 · ‖A‖, so an exact zero can
# converge (a relative test alone never passes at θ = 0).
ZERO_FLOOR = 1e-4
# A Gram–Schmidt remainder below BREAKDOWN · eps · ‖A‖ is rounding: the space is invariant.
BREAKDOWN = 100.0
# A sweep whose coupling to the next block is below NEAR_INVARIANT · ‖A‖ counts as complete
# whatever the tolerance: past that, its Krylov space only grows through rounding (the
# copies of a repeated eigenvalue split by ~eps, amplified), too slowly to be relied on.
NEAR_INVARIANT = 1e-8


def order_by(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``theta`` sorted best first for ``which`` ("LA", "SA" or "LM")."""
    return np.argsort(-rank_key(theta, which), kind="stable")


def rank_key(theta: np.ndarray, which: str) -> np.ndarray:
    """Larger is better: θ for "LA", −θ for "SA", |θ| for "LM"."""
    theta = np.asarray(theta, dtype=np.float64)
    return theta if which == "LA" else -theta if which == "SA" else np.abs(theta)


def residual_scale(theta: np.ndarray, norm: float) -> np.ndarray:
    """Denominators of relative residuals: max(|θ|, ZERO_FLOOR · ‖A‖), ‖A‖ ≈ ``norm``."""
    return np.maximum(np.abs(np.asarray(theta, dtype=np.float64)), ZERO_FLOOR * norm + 1e-300)


def symmetric_eigh(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of a small symmetric matrix (LAPACK syevr through SciPy).

    SciPy's syevr stays fast when torch's CPU threads are busy, unlike numpy/torch eigh;
    called directly, without ``scipy.linalg.eigh``'s checks (a third of its time at the
    sizes Lanczos sees). Imported here: scipy.linalg costs ~0.6 s, paid by every training
    run that imports the probes, most of which never run Lanczos.
    """
    from scipy.linalg import lapack

    if H.shape[0] == 0:
        return np.zeros(0), np.zeros((0, 0))
    w, v, m, _, info = lapack.dsyevr(np.asarray(H, dtype=np.float64), compute_v=1, range="A",
                                      lower=1)
    if info != 0 or m != H.shape[0]:
        raise np.linalg.LinAlgError(f"dsyevr failed (info {info}) on a {H.shape} matrix")
    return w, v


def check_which(which: str) -> None:
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")


def init_block(init: object, dim: int) -> Tensor:
    """A (m, P) block from an EigResult (its vectors) or a tensor (m, P) / (P,)."""
    block = getattr(init, "vectors", init)
    if block is None:
        raise ValueError(
            "init: the previous result has no vectors (it was computed with return_vectors=False)"
        )
    if not isinstance(block, Tensor):
        raise ValueError(f"init must be an EigResult or a tensor, got {type(init).__name__}")
    block = block.reshape(1, -1) if block.ndim == 1 else block
    if block.ndim != 2 or block.shape[1] != dim:
        raise ValueError(f"init must have shape (m, {dim}), got {tuple(block.shape)}")
    return block


def with_random_part(v: Tensor, gen: torch.Generator) -> Tensor:
    """A warm start v plus a random vector of 10% of its norm (lets directions that entered
    the wanted set since the previous measurement be found)."""
    z = randn(v.shape, gen, v.dtype, v.device)
    return v + (0.1 * float(v.norm()) / float(z.norm())) * z


DGKS = 0.5 ** 0.5  # a second Gram-Schmidt pass only when the first cancelled more than this


def orthonormalize(
    W: Tensor, basis: Tensor, gen: torch.Generator, replace: bool = True, floor: float = 0.0,
    norms: np.ndarray | None = None, out: Tensor | None = None,
) -> tuple[Tensor, np.ndarray]:
    """Gram–Schmidt of the rows of W against ``basis`` rows and each other, twice where
    the first pass cancelled more than 1 − 1/√2 of a row's norm (the Daniel–Gragg–Kaufman–
    Stewart test, as in ARPACK: "twice is enough", and once is when little cancels).

    Returns Q (b', P) and R (b', b) with W ≈ Rᵀ Q (column form W = Q R) up to the
    components along ``basis``. A row whose remainder is at most 1e3 eps times the largest
    row, or at most ``floor``, is dependent: it gets R_ii = 0 and, if ``replace``, a random
    unit direction orthogonal to everything (else it is dropped).
    b' = min(b, P − len(basis)) rows at most. ``norms``: the rows' norms, if known;
    ``out``: (b, P) rows to write Q into (at small sizes every pass over P counts).
    """
    b, dim = W.shape
    room = dim - basis.shape[0]
    out = W.new_empty(b, dim) if out is None else out
    rows: list[Tensor] = []
    R = np.zeros((b, b))
    norms = W.norm(dim=1).double().cpu().numpy() if norms is None else norms
    scale = float(norms.max()) if b else 0.0
    tiny = max(1e3 * torch.finfo(W.dtype).eps * max(scale, 1e-300), floor)
    for i in range(b):
        w = W[i]
        before = float(norms[i])
        for _ in range(2):
            if basis.shape[0]:  # w − Bᵀ(B w), one fused pass
                w = torch.addmv(w, basis.T, basis @ w, alpha=-1)
            for r, q in enumerate(rows):
                c = float(q @ w)
                R[r, i] += c
                w = w - c * q
            nrm = float(w.norm())
            if nrm >= DGKS * before:  # little cancellation: one pass is orthogonal enough
                break
            before = nrm
        if nrm > tiny:
            R[len(rows), i] = nrm
            rows.append(torch.div(w, nrm, out=out[len(rows)]))
            continue
        if not replace or basis.shape[0] + len(rows) >= dim:
            continue
        for _ in range(3):  # a random direction orthogonal to the basis and the rows so far
            z = randn((dim,), gen, W.dtype, W.device)
            for _ in range(2):
                if basis.shape[0]:
                    z = z - (basis @ z) @ basis
                for q in rows:
                    z = z - (q @ z) * q
            if float(z.norm()) > 1e-3 * float(torch.linalg.vector_norm(z, ord=float("inf"))):
                rows.append(torch.div(z, z.norm(), out=out[len(rows)]))
                break
    keep = min(len(rows), room)
    return out[:keep], R[:keep]


def default_max_basis(k: int, b: int, dim: int, itemsize: int, device: torch.device) -> int:
    """Basis rows: at least 2k + 2b + 20, at most what V and AV can hold in 1/4 of memory."""
    want = max(2 * k + 2 * b + 20, 60)
    cap = default_memory_budget(device) // (4 * max(dim * itemsize, 1))
    return int(min(dim, max(2 * k + 2 * b, min(want, cap))))


def lanczos(
    op: LinearOperator,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-4,
    max_products: int | None = None,
    init: object = None,
    block_size: int = 1,
    max_basis: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    return_vectors: bool = True,
) -> EigResult:
    """Top-k eigenpairs of a symmetric operator (module docstring for the method).

    Args:
        k: number of eigenpairs; which: "LA" (largest), "SA" (smallest), "LM" (magnitude).
        tol: stop when every wanted pair has ‖A v − λ v‖ / max(|λ|, 1e-4 ‖A‖) ≤ tol.
        max_products: product budget (default max(300, 40 k)); pairs not converged
            within it are returned with ``converged=False``.
        init: previous EigResult or (m, P) vectors to warm start from (module docstring).
        block_size: 1 (default): single-vector Lanczos; b > 1: block Lanczos from a random
            (b, P) block, or from the ``init`` block itself.
        max_basis: basis rows before a thick restart (default from k and memory).
        generator / seed: random stream for the start block (default seed 0).

    What ``converged`` certifies. A flagged pair (θ, v) has the true residual
    ‖A v − θ v‖ ≤ tol · max(|θ|, 1e-4 ‖A‖) (‖A‖ estimated by the largest |Ritz value|),
    so an eigenvalue of A lies within that distance of θ; the returned vectors being
    orthonormal, this holds for the k values jointly, counting multiplicity. That the
    flagged values are the k wanted ones, the i-th being the i-th eigenvalue counted with
    multiplicity, additionally needs the search to have seen every copy: guaranteed (for
    a random start, in exact arithmetic, the usual premise of Krylov methods) when every
    wanted eigenvalue has multiplicity ≤ ``block_size``, or when the Krylov spaces ran
    into invariant subspaces (small or low-rank operators), after which the deflation
    restarts find the copies. With ``block_size=1`` an eigenvalue of multiplicity m > 1
    (or a cluster narrower than the tolerance) whose space does not fill up is returned
    once: use ``block_size`` ≥ the expected multiplicity when symmetries (tied or shared
    weights, permutable units) can make wanted eigenvalues repeat.
    """
    t0 = time.perf_counter()
    dim = op.dim
    check_which(which)
    if not 1 <= int(k) <= dim:
        raise ValueError(f"k must be between 1 and the dimension {dim}, got {k}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    k = int(k)
    max_products = max(300, 40 * k) if max_products is None else int(max_products)
    if max_products < 1:
        raise ValueError(f"max_products must be >= 1, got {max_products}")
    dt, dev = op.dtype, op.device
    gen = make_generator(generator, seed, dev)
    if init is not None:
        start = init_block(init, dim).to(device=dev, dtype=dt)
        if block_size == 1:  # one vector: Σ u_i / ‖u_i‖ plus a 10% random part
            start = start / start.norm(dim=1, keepdim=True).clamp_min(1e-300)
            start = with_random_part(start.sum(0), gen)[None]
    else:
        start = randn((min(block_size, dim), dim), gen, dt, dev)
    Q, _ = orthonormalize(start, start.new_zeros(0, dim), gen, replace=False)
    if Q.shape[0] == 0:
        raise ValueError("init: the starting block is zero")
    b = Q.shape[0]
    if max_basis is None:
        max_basis = default_max_basis(k, b, dim, start.element_size(), dev)
    if max_basis < min(dim, k + 2 * b):
        raise ValueError(f"max_basis must be at least k + 2 * block = {k + 2 * b}, got {max_basis}")
    search = _Search(op, k, which, tol, b, max_basis, gen)
    search.cold = init is None
    certified = search.run(Q, max_products)
    return search.result(certified, return_vectors, time.perf_counter() - t0)


class _Search:
    """The state of :func:`lanczos`: basis rows [0, L) are locked eigenvectors (values
    ``locked``) from complete sweeps, rows [L, j) the current sweep with projected matrix
    ``H`` and the pending block Q coupled to it by ``C``."""

    def __init__(self, op, k, which, tol, b, max_basis, gen):
        self.op, self.k, self.which, self.tol, self.b = op, k, which, tol, b
        self.max_basis, self.gen = max_basis, gen
        self.eps = torch.finfo(op.dtype).eps
        self.V = torch.empty(max_basis + b, op.dim, dtype=op.dtype, device=op.device)
        self.AV = torch.empty_like(self.V)
        self.L = self.j = 0
        self.locked = np.zeros(0)
        self.H = np.zeros((0, 0))
        self.C = np.zeros((b, 0))
        self.theta, self.S = np.zeros(0), np.zeros((0, 0))  # current sweep's Ritz pairs
        self.est = np.zeros(0)  # their estimated relative residuals
        self.norm = 0.0  # estimate of ‖A‖: largest ‖A q‖ and |Ritz value| seen
        self.used = self.steps = 0
        self.last_complete: np.ndarray | None = None  # values of the last complete sweep
        self.cold = True  # a random start block (no ``init``)
        self.W_norms = np.zeros(0)  # the rows' norms of the last step's W
        self._ritz: tuple | None = None  # (state, Y, residuals) of the last true_residuals
        self._full: tuple | None = None  # (state, θ, S) of the last final_rayleigh_ritz

    # --- merged view: locked pairs, then the current sweep's Ritz pairs -----------------
    def values(self) -> np.ndarray:
        return np.concatenate([self.locked, self.theta])

    def wanted(self) -> np.ndarray:
        return order_by(self.values(), self.which)[: self.k]

    def coefficients(self, idx: np.ndarray) -> Tensor:
        """(len(idx), j) coefficients of the merged pairs ``idx`` over the basis rows."""
        coef = np.zeros((len(idx), self.j))
        for r, i in enumerate(idx):
            if i < self.L:
                coef[r, i] = 1.0
            else:
                coef[r, self.L :] = self.S[:, i - self.L]
        return _as_tensor(coef, self.op.dtype, self.op.device)

    def true_residuals(self, idx: np.ndarray) -> np.ndarray:
        """‖A y − θ y‖ / max(|θ|, floor) of merged pairs, from the stored products. The
        pairs' vectors Y are kept for :meth:`result` (a stop right after this test asks
        for the same pairs: two (k, j)·(j, P) products saved)."""
        key = (self.steps, self.j, self.L, len(self.theta), tuple(idx), self.norm)
        if self._ritz is not None and self._ritz[0] == key:
            return self._ritz[2]
        coef, theta = self.coefficients(idx), self.values()[idx]
        Y, AY = coef @ self.V[: self.j], coef @ self.AV[: self.j]
        AY -= _as_tensor(theta, Y.dtype, Y.device)[:, None] * Y
        res = AY.norm(dim=1).double().cpu().numpy() / residual_scale(theta, self.norm)
        self._ritz = (key, Y, res)
        return res

    def strictly_better(self, theta: np.ndarray, ref: float) -> np.ndarray:
        """Which of ``theta`` rank before ``ref`` by more than the tolerance."""
        tie = self.tol * residual_scale(np.array([ref]), self.norm)[0]
        return rank_key(theta, self.which) > rank_key(np.array([ref]), self.which)[0] + tie

    # --- the iteration ------------------------------------------------------------------
    def run(self, Q: Tensor, max_products: int) -> bool:
        """Iterate from the start block Q; True when the stop was certified."""
        dim, k = self.op.dim, self.k
        while True:
            self.step(Q)
            if self.j < dim:
                floor = BREAKDOWN * self.eps * self.norm
                Q, R = orthonormalize(self.W, self.V[: self.j], self.gen, floor=floor,
                                      norms=self.W_norms, out=self.V[self.j : self.j + self.b])
                n = len(self.theta)
                self.C = np.zeros((Q.shape[0], n))
                self.C[:, n - R.shape[1] :] = R
            else:
                Q, self.C = self.V[:0], np.zeros((0, len(self.theta)))
            self.estimate()
            if self.j >= dim:
                return True
            if self.complete():
                self.lock()
                sel = self.wanted()
                if len(sel) == k and not self.strictly_better(
                    self.last_complete, self.values()[sel[-1]]
                ).any():
                    return True  # no copy left unexplored can rank among the wanted
                Q = self.fresh_block()
            elif self.can_stop() and self.wanted_pass():
                return True
            if Q.shape[0] == 0 or self.used + Q.shape[0] > max_products:
                return False
            if self.j + Q.shape[0] > self.max_basis:
                self.thick_restart(Q.shape[0])

    def fresh_block(self) -> Tensor:
        """A random block orthogonal to the basis: the start of a new sweep (no coupling)."""
        dim, dt, dev = self.op.dim, self.op.dtype, self.op.device
        Z = randn((min(self.b, dim - self.j), dim), self.gen, dt, dev)
        Q, _ = orthonormalize(Z, self.V[: self.j], self.gen)
        self.C = np.zeros((Q.shape[0], 0))
        return Q

    def step(self, Q: Tensor) -> None:
        """Multiply the pending block, extend the current sweep, Rayleigh–Ritz on it.

        Q is stored as basis rows j0.. (it usually is already: :func:`orthonormalize`
        writes it there) and A Q straight into AV's rows; W = AQ − M Q − C V is one fused
        product over the coupled rows. ‖AQ_i‖² = ‖W_i‖² + ‖(M, C)_i‖² up to rounding (W is
        orthogonal to those rows), so the estimate of ‖A‖ needs no pass of its own."""
        dt, dev = self.op.dtype, self.op.device
        b, j0 = Q.shape[0], self.j
        j1 = j0 + b
        if Q.data_ptr() != self.V[j0].data_ptr():  # a fresh block, or moved by a restart
            shared = Q.untyped_storage().data_ptr() == self.V.untyped_storage().data_ptr()
            self.V[j0:j1] = Q.clone() if shared else Q  # rows may overlap their new place
        Q = self.V[j0:j1]
        AQ = self.op.matmat(Q, out=self.AV[j0:j1])
        self.used += b
        self.steps += 1
        M = (Q @ AQ.T).double().cpu().numpy()
        M = 0.5 * (M + M.T)
        coef, c0 = M, j0
        if self.j > self.L:  # the coupling to the sweep: only its nonzero columns (the
            # previous block, until a thick restart fills them)
            cols = np.flatnonzero(np.any(self.C != 0, axis=0))
            if cols.size:
                c0 = self.L + int(cols[0])
                coef = np.hstack([self.C[:, cols[0]:], M])
        self.W = torch.addmm(AQ, _as_tensor(coef, dt, dev), self.V[c0:j1], alpha=-1)
        self.W_norms = self.W.norm(dim=1).double().cpu().numpy()
        row_norms = np.sqrt(self.W_norms**2 + (coef**2).sum(1))
        self.norm = max(self.norm, float(row_norms.max()))
        self.H = np.block([[self.H, self.C.T], [self.C, M]])
        self.j = j1
        self.theta, self.S = symmetric_eigh(self.H)

    def estimate(self) -> None:
        """Estimated relative residuals ‖C s_i‖ / max(|θ_i|, floor) of the current sweep."""
        vals = self.values()
        self.norm = max(self.norm, float(np.abs(vals).max()) if len(vals) else 0.0)
        if self.C.shape[0] == 0:
            self.est = np.zeros(len(self.theta))
        else:
            res = np.linalg.norm(self.C @ self.S, axis=0)
            self.est = res / residual_scale(self.theta, self.norm)

    def complete(self) -> bool:
        """The current sweep spans an invariant subspace to the tolerance: every Ritz pair
        passes, or the coupling C is so small that every wanted pair would pass whatever
        its Ritz vector (‖C‖₂ ≤ tol · the smallest denominator among the wanted): the next
        block holds nothing of the start block that the tolerance can see."""
        if bool(np.all(self.est <= self.tol)):
            return True
        vals = self.values()[self.wanted()]
        # ‖C‖₂; one row (single-vector Lanczos): its Euclidean norm, without an SVD
        coupling = (0.0 if not self.C.size else float(np.linalg.norm(self.C)) if
                    self.C.shape[0] == 1 else float(np.linalg.norm(self.C, 2)))
        return coupling <= max(
            self.tol * float(residual_scale(vals, self.norm).min()), NEAR_INVARIANT * self.norm
        )

    def can_stop(self) -> bool:
        """The k wanted pairs pass the estimate; after a complete sweep, moreover, the
        current sweep's best Ritz value has converged and is not strictly better than the
        k-th wanted one (a sweep that found a wanted value runs on until it is complete:
        one start vector sees one copy, and more may hide)."""
        sel = self.wanted()
        if len(sel) < self.k or (self.cold and self.steps == 1 and self.b > 1):
            return False  # a random block converged at once has met an eigenspace exactly
        est = np.concatenate([np.zeros(self.L), self.est])
        if not bool(np.all(est[sel] <= self.tol)):
            return False
        if self.last_complete is None:
            return True
        best = order_by(self.theta, self.which)[0]
        kth = self.values()[sel[-1]]
        return bool(self.est[best] <= self.tol) and not self.strictly_better(
            self.theta[best : best + 1], kth
        )[0]

    def lock(self) -> None:
        """Turn the (invariant) current sweep into locked eigenpairs; drop its coupling."""
        if self.j > self.L:
            St = _as_tensor(self.S.T, self.op.dtype, self.op.device)
            rows = slice(self.L, self.j)
            self.V[rows], self.AV[rows] = St @ self.V[rows], St @ self.AV[rows]
        self.locked = np.concatenate([self.locked, self.theta])
        self.last_complete = self.theta
        self.L = self.j
        self.theta, self.S, self.est = np.zeros(0), np.zeros((0, 0)), np.zeros(0)
        self.H, self.C = np.zeros((0, 0)), np.zeros((0, 0))

    def thick_restart(self, pending: int) -> None:
        """Keep the locked pairs among the wanted and the current sweep's best Ritz vectors."""
        dt, dev = self.op.dtype, self.op.device
        sel = self.wanted()
        keep_locked = np.sort(sel[sel < self.L])
        p = self.k - len(keep_locked) + max(1, (self.max_basis - self.k - pending) // 2)
        keep = order_by(self.theta, self.which)[:p]
        Sp = self.S[:, keep]
        rows = torch.as_tensor(keep_locked, dtype=torch.long, device=dev)
        new_V = torch.cat([self.V[rows], _as_tensor(Sp.T, dt, dev) @ self.V[self.L : self.j]])
        new_AV = torch.cat([self.AV[rows], _as_tensor(Sp.T, dt, dev) @ self.AV[self.L : self.j]])
        self.L, self.j = len(keep_locked), len(keep_locked) + len(keep)
        self.V[: self.j], self.AV[: self.j] = new_V, new_AV
        self.locked = self.locked[keep_locked]
        self.theta, self.S = self.theta[keep], np.eye(len(keep))
        self.H, self.C = np.diag(self.theta), self.C @ Sp
        self.est = self.est[keep]

    def wanted_pass(self) -> bool:
        """The true residuals of the wanted pairs (after a restart: of the whole basis's
        Rayleigh–Ritz pairs, which the result will return) are all ≤ tol."""
        if self.last_complete is None:
            return bool(np.all(self.true_residuals(self.wanted()) <= self.tol))
        saved = (self.theta, self.S, self.L, self.locked)
        self.final_rayleigh_ritz()
        ok = bool(np.all(self.true_residuals(self.wanted()) <= self.tol))
        self.theta, self.S, self.L, self.locked = saved
        return ok

    def final_rayleigh_ritz(self) -> None:
        """Rayleigh–Ritz on the whole basis with the stored products, H = V (AV)ᵀ: it puts
        back the couplings that locking dropped (no product; only after a restart)."""
        if self.last_complete is None or self.j == 0:
            return
        key = (self.steps, self.j, self.L)  # the stop test's, when result() follows it
        if self._full is None or self._full[0] != key:
            V, AV = self.V[: self.j], self.AV[: self.j]
            H = (V @ AV.T).double().cpu().numpy()
            self._full = (key, *symmetric_eigh(0.5 * (H + H.T)))
        self.theta, self.S = self._full[1], self._full[2]
        self.L, self.locked = 0, np.zeros(0)

    def result(self, certified: bool, return_vectors: bool, seconds: float) -> EigResult:
        self.final_rayleigh_ritz()
        sel = self.wanted()
        m, k = len(sel), self.k
        values = self.values()[sel]
        true_res = self.true_residuals(sel) if m else np.zeros(0)
        conv = true_res <= self.tol
        if not certified and self.last_complete is not None and m:
            # every eigenvalue not found yet is a copy of a value of the last complete
            # sweep: a pair is certain only if none of those can rank before it
            best = self.last_complete[order_by(self.last_complete, self.which)[:1]]
            tie = self.tol * residual_scale(values, self.norm)
            conv &= rank_key(best, self.which)[0] <= rank_key(values, self.which) + tie
        residuals = torch.as_tensor(true_res, dtype=torch.float64)
        out_values = torch.as_tensor(values, dtype=torch.float64)
        converged = torch.as_tensor(conv)
        if m < k:  # budget ended before k Ritz pairs existed
            pad = torch.ones(k - m, dtype=torch.float64)
            out_values = torch.cat([out_values, pad * float("nan")])
            residuals = torch.cat([residuals, pad * float("inf")])
            converged = torch.cat([converged, torch.zeros(k - m, dtype=torch.bool)])
        vectors = None
        if return_vectors and m == k:
            vectors = self._ritz[1] if self._ritz is not None else (
                self.coefficients(sel) @ self.V[: self.j])
        return EigResult(
            values=out_values,
            vectors=vectors,
            residuals=residuals,
            converged=converged,
            products=self.used,
            seconds=seconds,
            which=self.which,
            method="lanczos",
            tol=float(self.tol),
            iterations=self.steps,
        )


def _as_tensor(a: np.ndarray, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small numpy matrix as a tensor on the working device/dtype."""
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)
