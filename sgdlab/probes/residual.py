"""Iterative inference in residual networks (Jastrzebski, Arpit, Ballas, Verma, Che, Bengio,
ICLR 2018, "Residual Connections Encourage Iterative Inference").

A block maps ``h_t -> h_{t+1} = h_t + F(h_t)``; to first order
``L(h_{t+1}) ~ L(h_t) + F(h_t) . dL/dh_t``, so a block refines the representation like a
gradient step when its branch output points against the loss gradient. Per block t, over a
fixed set of examples with ``L`` the mean loss:

    cos_t   = mean_i  F(h_t)_i . (dL/dh_t)_i / (||F(h_t)_i|| ||(dL/dh_t)_i||)
    ratio_t = mean_i  ||F(h_t)_i|| / ||h_t_i||

(each example's tensors flattened; the mean over examples of the per-example cosine, as in the
paper; a cosine with a zero vector counts as 0). For a non-identity (downsampling) block,
``F(h_t)`` and ``h_t`` live in different spaces: there ``h_t`` is replaced by the shortcut
``s(h_t)`` and ``dL/dh_t`` by ``dL/do_t`` with ``o_t = s(h_t) + F(h_t)`` the block output (the
point to which ``F`` is added); ``identity`` flags which blocks are which.

The model must expose ``model.blocks`` (in order) with ``block.branch(h)``,
``block.shortcut_of(h)`` and ``block.is_identity``. Inputs and outputs of the blocks are
captured by hooks during one forward pass in eval mode (modes restored), the gradients taken
with ``torch.autograd.grad`` (parameters' ``.grad`` untouched), and ``F``, ``s`` recomputed
without gradient from the captured inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sgdlab.errors import ConfigError
from sgdlab.evaluation import eval_mode
from sgdlab.probes.base import OptionError, Probe, ProbeContext, Schedule, check_int

LossFn = Callable[[Tensor, Tensor], Tensor]


def has_blocks(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return blocks is not None and len(blocks) > 0 and all(
        hasattr(b, "branch") and hasattr(b, "shortcut_of") for b in blocks)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of (n, d) matrices; 0 where a row is zero."""
    denom = a.norm(dim=1) * b.norm(dim=1)
    dot = (a * b).sum(dim=1)
    return torch.where(denom > 0, dot / denom.clamp_min(torch.finfo(dot.dtype).tiny),
                       torch.zeros_like(dot))


@contextmanager
def _capture(blocks: list[nn.Module]) -> Iterator[tuple[list, list]]:
    """Record each block's input and output during a forward pass; an input that does not
    require grad (e.g. the raw data) is replaced by a leaf that does, so dL/dh exists."""
    ins: list = [None] * len(blocks)
    outs: list = [None] * len(blocks)

    def pre_hook(i: int):
        def hook(module, args):
            h = args[0] if args[0].requires_grad else args[0].detach().requires_grad_(True)
            ins[i] = h
            return (h, *args[1:])
        return hook

    def post_hook(i: int):
        def hook(module, args, out):
            outs[i] = out
        return hook

    handles = [b.register_forward_pre_hook(pre_hook(i)) for i, b in enumerate(blocks)]
    handles += [b.register_forward_hook(post_hook(i)) for i, b in enumerate(blocks)]
    try:
        yield ins, outs
    finally:
        for handle in handles:
            handle.remove()


def iterative_inference(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, *,
                        chunk: int = 256) -> dict[str, Tensor]:
    """Per-block ``cos``, ``ratio`` (float64, length = number of blocks) and ``identity``
    (bool) on ``(x, y)``, processed ``chunk`` examples at a time; ``loss_fn`` is the mean loss."""
    if not has_blocks(model):
        raise TypeError("iterative_inference needs a model with .blocks (branch, shortcut_of)")
    blocks = list(model.blocks)
    identity = torch.tensor([bool(getattr(b, "is_identity", False)) for b in blocks])
    cos_sum = torch.zeros(len(blocks), dtype=torch.float64)
    ratio_sum = torch.zeros(len(blocks), dtype=torch.float64)
    n = len(x)
    with eval_mode(model):
        for start in range(0, n, chunk):
            xb, yb = x[start:start + chunk], y[start:start + chunk]
            with _capture(blocks) as (ins, outs), torch.enable_grad():
                loss = loss_fn(model(xb), yb) * (len(xb) / n)
                wrt = [ins[i] if identity[i] else outs[i] for i in range(len(blocks))]
                grads = torch.autograd.grad(loss, wrt, allow_unused=True)
            with torch.no_grad():
                for i, block in enumerate(blocks):
                    h = ins[i].detach()
                    f = block.branch(h).reshape(len(xb), -1)
                    ref = (h if identity[i] else block.shortcut_of(h)).reshape(len(xb), -1)
                    g = grads[i]
                    g = torch.zeros_like(f) if g is None else g.reshape(len(xb), -1)
                    cos_sum[i] += _cosine(f, g).double().sum().cpu()
                    ratio_sum[i] += (f.norm(dim=1) / ref.norm(dim=1)).double().sum().cpu()
    return {"cos": cos_sum / n, "ratio": ratio_sum / n, "identity": identity}


class ResidualInference(Probe):
    """Iterative inference on a fixed subset of ``n`` examples of ``split``. Arrays ``cos``,
    ``ratio``, ``identity`` (one entry per block); scalars ``cos_mean``, ``ratio_mean`` over
    identity blocks and ``cos_mean_all``, ``ratio_mean_all`` over all blocks."""

    name = "residual"

    def __init__(self, schedule: Schedule | None = None, *, n: int = 512, split: str = "train",
                 chunk: int = 256) -> None:
        super().__init__(schedule)
        if split not in ("train", "test"):
            raise OptionError(self.name, "split", split, "'train' or 'test'")
        for key, value in (("n", n), ("chunk", chunk)):
            check_int(self.name, key, value)
        self.n, self.split, self.chunk = n, split, chunk

    def check(self, model: nn.Module, data) -> None:
        if not has_blocks(model):
            raise ConfigError(f"probe residual needs a ResNet model (with .blocks); "
                              f"{type(model).__name__} has none")

    def measure(self, ctx: ProbeContext) -> dict:
        x, y = ctx.subset(self.n, self.split)
        out: dict = iterative_inference(ctx.model, ctx.loss_fn, x, y, chunk=self.chunk)
        ident = out["identity"]
        for key in ("cos", "ratio"):
            out[f"{key}_mean_all"] = out[key].mean().item()
            out[f"{key}_mean"] = out[key][ident].mean().item() if ident.any() else float("nan")
        return out
