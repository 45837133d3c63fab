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
    seed           the forward pass's randomness in train mode (the global RNG is untouched);
    reduction      "mean" (the loss of a batch is the mean over its examples; the default)
                   or "sum"; default: ``loss_fn.reduction`` where it exists (e.g.
                   ``nn.CrossEntropyLoss(reduction="sum")``), else "mean". A value that
                   contradicts ``loss_fn.reduction`` is refused;
    forward        ``forward(model, batch) -> output``: how the model is called on a batch
                   (default ``model(batch[0])``; e.g. ``lambda m, b: m(**b).logits`` for
                   dict batches as Hugging Face models take);
    loss           ``loss(output, batch) -> scalar``: the batch's loss (default
                   ``loss_fn(output, batch[1])``); with it, ``loss_fn`` may be None.

Batches of any structure (tuples, dicts, nested) work with ``forward`` and ``loss``: the
examples of a batch are the leading dimension of its tensors (a batch is split into chunks
by slicing every tensor whose leading dimension is the batch's size; other entries are
passed whole). The Gauss–Newton matrix needs ``forward`` to return a tensor (the loss is
differentiated twice with respect to it), the covariance and Fisher need ``loss`` to
apply to one example's slice of the output and the batch.
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
REDUCTIONS = (None, "mean", "sum")


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
    reduction: str | None = None
    forward: Callable[[Any, Any], Any] | None = None
    loss: Callable[[Any, Any], Tensor] | None = None

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
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        for name in ("forward", "loss"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"{name} must be a callable, got {type(value).__name__}")

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


def resolve_reduction(options: CurvatureOptions, loss: Any) -> str:
    """"mean" or "sum": ``options.reduction``, checked against the loss's own
    ``reduction`` attribute (``nn.MSELoss``, ``nn.CrossEntropyLoss``, ...), which also
    gives the default."""
    declared = getattr(loss, "reduction", None)
    if declared is not None and declared not in ("mean", "sum"):
        raise ValueError(f"loss_fn.reduction is {declared!r}: curvature needs the loss of a "
                         "batch as one number, reduction 'mean' or 'sum'")
    if options.reduction is None:
        return declared or "mean"
    if declared is not None and declared != options.reduction:
        raise ValueError(f"reduction={options.reduction!r} contradicts loss_fn.reduction = "
                         f"{declared!r}: drop reduction= or change the loss")
    return options.reduction
