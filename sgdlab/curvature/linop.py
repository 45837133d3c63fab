"""Symmetric linear operators on R^P, the interface every curvature algorithm consumes.

An operator maps a block of row vectors V (m, P) to A V (m, P) (``matmat``) and counts
the matrix-vector products it performed (a block of m vectors counts m). Algorithms in
:mod:`sgdlab.curvature` only use ``shape``, ``dtype``, ``device`` and ``matmat``, so any
symmetric matrix can be analysed, not only a network's Hessian.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, turn TF32 off in cuDNN convolutions and cuBLAS matmuls for the block.

    torch lets cuDNN convolutions use TF32 (10-bit mantissa, ~1e-3 relative) by default;
    curvature products need float32's 24 bits, or Lanczos residuals stall near 1e-3. The
    flags are restored afterwards; a process that set the new ``fp32_precision`` API (the
    legacy flags then raise when read) is left as it is.
    """
    flags = (torch.backends.cudnn, torch.backends.cuda.matmul)
    try:
        saved = [f.allow_tf32 for f in flags] if torch.device(device).type == "cuda" else None
    except RuntimeError:
        saved = None
    if saved is None:
        yield
        return
    for f in flags:
        f.allow_tf32 = False
    try:
        yield
    finally:
        for f, flag in zip(flags, saved):
            f.allow_tf32 = flag


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast off (a caller's ``torch.autocast`` would run products and the algorithms'
    algebra in bfloat16/float16) and, on CUDA, TF32 off (:func:`ieee_float32`)."""
    with torch.autocast(torch.device(device).type, enabled=False), ieee_float32(device):
        yield


class LinearOperator:
    """Base class: subclasses implement ``_matmat(V)`` for V of shape (m, P)."""

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device):
        self.dim = int(dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.products = 0  # matrix-vector products performed so far

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def _matmat(self, V: Tensor) -> Tensor:
        raise NotImplementedError

    def _matmat_into(self, V: Tensor, out: Tensor) -> Tensor:
        """A V written into ``out``; operators that can fill it directly override this."""
        return out.copy_(self._matmat(V))

    def matmat(self, V: Tensor, out: Tensor | None = None) -> Tensor:
        """A V for a block of row vectors V (m, P); counts m products. With ``out`` (m, P),
        the result is written there (and returned)."""
        if V.ndim != 2 or V.shape[1] != self.dim:
            raise ValueError(f"matmat expects a (m, {self.dim}) block, got {tuple(V.shape)}")
        if out is not None and out.shape != V.shape:
            raise ValueError(f"matmat: out has shape {tuple(out.shape)}, V {tuple(V.shape)}")
        V = V.to(device=self.device, dtype=self.dtype)
        self.products += V.shape[0]
        with full_precision(self.device):
            return self._matmat(V) if out is None else self._matmat_into(V, out)

    def matvec(self, v: Tensor) -> Tensor:
        """A v for one vector v (P,)."""
        if v.ndim != 1:
            raise ValueError(
                f"matvec expects a vector of shape ({self.dim},), got {tuple(v.shape)}"
            )
        return self.matmat(v[None])[0]

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v) if v.ndim == 1 else self.matmat(v.T).T

    def to_dense(self, block: int = 64) -> Tensor:
        """The P x P matrix, column block by column block (P products; for tests)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        cols = [self.matmat(eye[i : i + block]) for i in range(0, self.dim, block)]
        return torch.cat(cols).T.contiguous()


class DenseOperator(LinearOperator):
    """A symmetric matrix given explicitly (tests, small problems)."""

    def __init__(self, matrix: Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"DenseOperator needs a square matrix, got {tuple(matrix.shape)}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, V: Tensor) -> Tensor:
        return V @ self.matrix.T
