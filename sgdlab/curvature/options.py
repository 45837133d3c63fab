"""How a curvature operator is built: one options object shared by every operator.

    opts = CurvatureOptions(chunk_size=256, dtype=torch.float64)
    op = HessianOperator(model, loss_fn, data, opts)            # or keyword by keyword:
    op = HessianOperator(model, loss_fn, data, chunk_size=256)
    hessian_eigs(model, loss_fn, data, k=5, options=opts)

Fields:

    params         None (all trainable parameters), a list of parameters or names, or a
                   predicate on names (per-layer curvature);
    train          False: eval mode (default); True: train mode (batch statistics; dropout
                   masks fixed by ``seed``). The model's flags, buffers and ``.grad`` are
                   never changed;
    backend        how products are formed, per operator ("auto" picks): the Hessian's
                   "graph", "recompute", "func"; the covariance's "materialize",
                   "matrix_free"; see each operator's docstring;
    chunk_size     examples per forward pass (default: chosen from the memory budget);
    dtype          working dtype (default: the parameters'; float64 for references);
    memory_budget  bytes for graphs and bases (default: half the free memory);
    batched        multiply blocks of vectors in one vmapped pass (default: on CUDA);
    seed           the forward pass's randomness in train mode (the global RNG is untouched).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

ParamSpec = None | Sequence[Tensor] | Sequence[str] | Callable[[str], bool]


@dataclass(frozen=True)
class CurvatureOptions:
    """What a curvature operator is built with (module docstring)."""

    params: ParamSpec = None
    train: bool = False
    backend: str = "auto"
    chunk_size: int | None = None
    dtype: torch.dtype | None = None
    memory_budget: int | None = None
    batched: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chunk_size is not None and int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {self.chunk_size}")
        if self.dtype is not None and not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {self.dtype}")
        if self.memory_budget is not None and int(self.memory_budget) < 1:
            raise ValueError(f"memory_budget must be a positive number of bytes, got "
                             f"{self.memory_budget}")
        if not isinstance(self.backend, str):
            raise ValueError(f"backend must be a string, got {self.backend!r}")

    @classmethod
    def build(cls, options: CurvatureOptions | None = None, **fields: Any) -> CurvatureOptions:
        """``options`` (default: all defaults) with ``fields`` replaced; an unknown field is a
        TypeError naming it. ``route`` is the old name of ``backend`` (deprecated)."""
        if "route" in fields:
            warnings.warn("route= is deprecated: use backend= (same values)", DeprecationWarning,
                          stacklevel=3)
            route = fields.pop("route")
            fields.setdefault("backend", route)
        unknown = sorted(set(fields) - OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown curvature option {unknown[0]!r} "
                            f"(options: {', '.join(sorted(OPTION_NAMES))})")
        base = options if options is not None else cls()
        if not isinstance(base, CurvatureOptions):
            raise TypeError(f"options must be a CurvatureOptions, got {type(base).__name__}")
        return dataclasses.replace(base, **fields) if fields else base


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(CurvatureOptions)) | {"route"}


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(operator options, the rest) from one keyword dict."""
    options = {k: v for k, v in kwargs.items() if k in OPTION_NAMES}
    return options, {k: v for k, v in kwargs.items() if k not in OPTION_NAMES}
