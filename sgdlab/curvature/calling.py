"""How a curvature operator calls the model: which parameters are variables, the
train/eval flags for the duration of a call, kernels that can be differentiated twice,
and a user's ``forward(model, batch)`` as a module that ``functional_call`` can
reparametrize. Nothing here changes the model beyond the duration of a block."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm

from sgdlab.curvature.options import ParamSpec


def select_parameters(model: nn.Module, params: ParamSpec) -> list[str]:
    """Names of the parameters the operator differentiates, in ``named_parameters`` order.

    ``params`` is None (every parameter with ``requires_grad``), a list of parameter
    tensors of the model, a list of names, or a predicate on names. A tied parameter (one
    tensor reachable under several names) has one name in ``named_parameters``, its first;
    any of its names selects it.
    """
    named = list(model.named_parameters())
    canonical = {id(p): n for n, p in named}
    alias = {n: canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
    if params is None:
        names = [n for n, p in named if p.requires_grad]
    elif callable(params):
        chosen = {canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False)
                  if params(n)}
        names = [n for n, _ in named if n in chosen]
    else:
        params = list(params)
        if all(isinstance(p, str) for p in params):
            unknown = [p for p in params if p not in alias]
            if unknown:
                raise ValueError(f"params: no parameter named {unknown[0]!r} in the model")
            wanted = {alias[p] for p in params}
        elif all(isinstance(p, Tensor) for p in params):
            ids = {id(p) for p in params}
            wanted = {n for n, p in named if id(p) in ids}
            if len(wanted) != len(ids):
                raise ValueError("params: some tensors are not parameters of the model")
        else:
            raise ValueError(
                "params must be None, a list of parameters, a list of names or a predicate"
            )
        names = [n for n, _ in named if n in wanted]
    if not names:
        raise ValueError("params: the selection contains no parameter")
    return names


@contextlib.contextmanager
def model_mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Set train/eval for the duration of a block, then restore every submodule's flag."""
    saved = [(m, m.training) for m in model.modules()]
    untracked = []
    try:
        model.train(train)
        if train:
            for m in model.modules():
                if isinstance(m, _BatchNorm) and m.track_running_stats:
                    m.track_running_stats = False
                    untracked.append(m)
        yield
    finally:
        for m in untracked:
            m.track_running_stats = True
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def differentiable_kernels() -> Iterator[None]:
    """Kernels whose derivatives curvature needs: the math kernel of
    ``scaled_dot_product_attention`` (the fused and flash kernels have no double backward
    and no forward-mode rule) and no fast path of ``nn.MultiheadAttention`` /
    ``nn.TransformerEncoderLayer`` (fused inference kernels)."""
    mha = getattr(torch.backends, "mha", None)
    fast = getattr(mha, "get_fastpath_enabled", lambda: False)()
    with contextlib.ExitStack() as stack:
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        if fast:
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, True)
        yield


class ForwardModule(nn.Module):
    """``forward(model, batch)`` as a module, so that ``functional_call`` can substitute
    the model's parameters (its parameter names are the model's, prefixed ``model.``)."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Any], Any]):
        super().__init__()
        self.model, self.call = model, forward

    def forward(self, batch: Any) -> Any:
        return self.call(self.model, batch)
