"""Loss and accuracy at many parameter points at once.

For points θ_1..θ_m (an (m, P) block in the layout of :mod:`sgdlab.landscape.layout`) the
evaluator returns

    L(θ_i) = Σ_b (n_b / N) · loss_fn(f(θ_i; x_b), y_b),
    acc(θ_i) = (1/N) #{j : argmax f(θ_i; x_j) = y_j},

with ``loss_fn`` the MEAN loss of a batch, so splitting the data into chunks gives the same
numbers as one big batch. Instead of loading every point into the model, blocks of points
are stacked and run through ``torch.func.functional_call`` under ``torch.func.vmap`` (one
forward pass for c points × e examples), with c and e chosen to keep the activations of a
pass within ``memory_budget`` bytes. The model, its buffers and flags are never changed.

BatchNorm (``bn``):

* ``"eval"`` (default): the model in eval mode; every point is normalized with the running
  statistics the model holds (its buffers), as a network is evaluated after training.
* ``"recompute"``: for each point the running statistics are computed afresh, as
  ``torch.optim.swa_utils.update_bn`` does, then the point is evaluated in eval mode: every
  BatchNorm layer in train mode with ``momentum=None`` (a cumulative average) and fresh
  buffers (mean 0, variance 1), the rest of the network in eval mode (dropout off), one
  forward pass per batch of ``bn_data`` (default: the evaluation data; a single (x, y)
  pair is split into batches of ``bn_batch_size`` examples if given). The statistics are
  then the mean over those batches of the batch means and of the unbiased batch variances;
  they depend on the batches, which are therefore fixed (never re-chunked for memory).
  Garipov et al. (2018) evaluate points of a curve this way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.layout import Data, Layout, LossFn, ParamSpec, as_batches

BN_MODES = ("eval", "recompute")

# Default bytes of activations per forward pass on the CPU: chunks that stay near the
# caches run convolutions and pooling fastest. bench/landscape.py, benchmark CNN (width 16,
# 1,024 images): 175 ms a point at 48 MB (1 point × 280 images a pass), 213 at 8 MB,
# 527 at 1 GB (5 points × 1,024 images), against 360 for a load-each-point loop.
CPU_BUDGET = 48 << 20


def default_budget(device: torch.device) -> int:
    """Activation bytes one pass may use: a cache-sized chunk on CPU, a quarter of the free
    memory on CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    return CPU_BUDGET


def correct_top1(out: Tensor, y: Tensor) -> Tensor:
    """Number of examples whose largest output is the target class (targets given as class
    indices, or as scores/one-hot rows of the outputs' shape); NaN for other outputs."""
    if out.ndim != 2 or out.shape[1] < 2:
        return torch.full((), math.nan, dtype=torch.float64, device=out.device)
    if y.ndim == 1 and not y.is_floating_point():
        labels = y
    elif y.shape == out.shape:
        labels = y.argmax(1)
    else:
        return torch.full((), math.nan, dtype=torch.float64, device=out.device)
    return (out.argmax(1) == labels).sum().to(torch.float64)


@contextlib.contextmanager
def _bn_statistics_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, BatchNorm layers in train mode with momentum None; all restored after."""
    saved = [(m, m.training) for m in model.modules()]
    momenta = []
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, _BatchNorm) and m.track_running_stats:
                momenta.append((m, m.momentum))
                m.momentum = None
                m.train()
        yield
    finally:
        for m, mom in momenta:
            m.momentum = mom
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


class PointEvaluator:
    """Loss and accuracy of (model, loss_fn, data) at blocks of points; see the module doc.

    ``batched=False`` evaluates one point per pass (same chunked data, no vmap), for
    models with operations vmap cannot batch. ``point_chunk``/``example_chunk`` fix the
    chunk sizes instead of deriving them from ``memory_budget``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Data,
        *,
        params: ParamSpec = None,
        bn: str = "eval",
        bn_data: Data | None = None,
        bn_batch_size: int | None = None,
        dtype: torch.dtype | None = None,
        memory_budget: int | None = None,
        point_chunk: int | None = None,
        example_chunk: int | None = None,
        batched: bool = True,
        correct_fn: Callable[[Tensor, Tensor], Tensor] = correct_top1,
    ):
        if bn not in BN_MODES:
            raise LandscapeError(f"bn: must be one of {BN_MODES}, got {bn!r}")
        self.layout = Layout.of(model, params)
        self.model, self.loss_fn, self.bn, self.batched = model, loss_fn, bn, bool(batched)
        self.correct_fn = correct_fn
        named = dict(model.named_parameters())
        first = named[self.layout.names[0]]
        self.device = first.device
        self.dtype = dtype or first.dtype
        selected = set(self.layout.names)
        self.frozen: dict[str, Tensor] = {
            n: self._cast(p.detach()) for n, p in named.items() if n not in selected
        }
        self.buffers = {n: self._cast(b.detach()) for n, b in model.named_buffers()}
        self.batches = [(self._cast(x), self._cast(y)) for x, y in as_batches(data)]
        self.num_examples = sum(len(y) for _, y in self.batches)
        self.bn_batches: list[Tensor] = []
        if bn == "recompute":
            source = as_batches(bn_data if bn_data is not None else data)
            if bn_batch_size is not None:
                if int(bn_batch_size) < 1:
                    raise LandscapeError(f"bn_batch_size: must be >= 1, got {bn_batch_size}")
                source = [(xs, xs) for x, _ in source for xs in x.split(int(bn_batch_size))]
            self.bn_batches = [self._cast(x) for x, _ in source]
            self.bn_names = [
                n
                for n, m in model.named_modules()
                if isinstance(m, _BatchNorm) and m.track_running_stats
            ]
        self.memory_budget = int(memory_budget or default_budget(self.device))
        self.point_chunk = None if point_chunk is None else max(1, int(point_chunk))
        self.example_chunk = None if example_chunk is None else max(1, int(example_chunk))
        self._act_bytes: float | None = None

    def _cast(self, t: Tensor) -> Tensor:
        if t.is_floating_point():
            return t.to(device=self.device, dtype=self.dtype)
        return t.to(device=self.device)

    # ---------------------------------------------------------------- memory
    def activation_bytes(self) -> float:
        """Bytes per example of one point's forward pass: the outputs of every submodule
        (an upper bound on what a no-grad pass keeps alive), measured once on a few
        examples."""
        if self._act_bytes is None:
            x = self.batches[0][0][:8]
            total = x.numel() * x.element_size()
            sizes: list[int] = []

            def hook(_m, _inp, out):
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, Tensor):
                        sizes.append(t.numel() * t.element_size())

            handles = [m.register_forward_hook(hook) for m in self.model.modules()]
            try:
                with torch.no_grad(), _eval_mode(self.model):
                    self._call(self._center_like(), x, self.buffers)
            finally:
                for h in handles:
                    h.remove()
            self._act_bytes = max(1.0, (total + sum(sizes)) / len(x))
        return self._act_bytes

    def _center_like(self) -> dict[str, Tensor]:
        named = dict(self.model.named_parameters())
        return {n: self._cast(named[n].detach()) for n in self.layout.names}

    def chunks(self, m: int) -> tuple[int, int]:
        """(points per pass, examples per pass) for m points."""
        act = self.activation_bytes()
        largest = max(len(y) for _, y in self.batches)
        e = self.example_chunk or max(1, min(largest, int(self.memory_budget // act)))
        c = self.point_chunk or max(1, int(self.memory_budget // (act * e)))
        if self.bn == "recompute":
            bn_largest = max(len(x) for x in self.bn_batches)
            c = min(c, self.point_chunk or max(1, int(self.memory_budget // (act * bn_largest))))
        return (min(c, m) if self.batched else 1), e

    # -------------------------------------------------------------- forward
    def _call(self, params: dict[str, Tensor], x: Tensor, buffers: dict[str, Tensor]) -> Tensor:
        mapping: dict[str, Any] = dict(self.frozen)
        mapping.update(buffers)
        mapping.update(params)
        return functional_call(self.model, mapping, (x,))

    def _fresh_statistics(self, c: int | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Reset BatchNorm buffers (one set per point when c is not None) and vmap in_dims."""
        bufs, dims = dict(self.buffers), {}
        for name in self.bn_names:
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                full = f"{name}.{key}" if name else key
                ref = self.buffers[full]
                if key == "num_batches_tracked":
                    bufs[full], dims[full] = torch.zeros_like(ref), None
                    continue
                fill = torch.zeros_like if key == "running_mean" else torch.ones_like
                base = fill(ref)
                bufs[full] = base if c is None else base.expand(c, *ref.shape).clone()
                dims[full] = 0
        for n in bufs:
            dims.setdefault(n, None)
        return bufs, dims

    def _evaluate_block(self, block: Tensor, e: int) -> tuple[Tensor, Tensor]:
        c = block.shape[0]
        params = self.layout.tensors(block)
        loss = torch.zeros(c, dtype=torch.float64, device=self.device)
        correct = torch.zeros(c, dtype=torch.float64, device=self.device)
        pdims = {n: 0 for n in params}
        if self.batched:
            bufs, bdims = (
                self._fresh_statistics(c) if self.bn == "recompute" else (self.buffers, None)
            )
            if self.bn == "recompute":
                with _bn_statistics_mode(self.model):
                    for x in self.bn_batches:
                        vmap(lambda p, b, x=x: self._call(p, x, b), in_dims=(pdims, bdims))(
                            params, bufs
                        )
            with _eval_mode(self.model):
                for x, y in self.batches:
                    for xs, ys in zip(x.split(e), y.split(e)):
                        out = vmap(
                            lambda p, b, xs=xs: self._call(p, xs, b),
                            in_dims=(pdims, bdims),
                        )(params, bufs)
                        w = len(ys) / self.num_examples
                        loss += vmap(self.loss_fn, in_dims=(0, None))(out, ys).to(torch.float64) * w
                        correct += vmap(self.correct_fn, in_dims=(0, None))(out, ys)
            return loss, correct
        for i in range(c):
            p = {n: t[i] for n, t in params.items()}
            bufs = self.buffers
            if self.bn == "recompute":
                bufs, _ = self._fresh_statistics(None)
                with _bn_statistics_mode(self.model):
                    for x in self.bn_batches:
                        self._call(p, x, bufs)
            with _eval_mode(self.model):
                for x, y in self.batches:
                    for xs, ys in zip(x.split(e), y.split(e)):
                        out = self._call(p, xs, bufs)
                        w = len(ys) / self.num_examples
                        loss[i] += self.loss_fn(out, ys).to(torch.float64) * w
                        correct[i] += self.correct_fn(out, ys)
        return loss, correct

    def __call__(self, points) -> tuple[np.ndarray, np.ndarray]:
        """(loss, accuracy): float64 arrays of length m for an (m, P) block of points (or
        a sequence of points in any accepted form)."""
        block = self.layout.block(points, dtype=self.dtype, device=self.device)
        c, e = self.chunks(block.shape[0])
        losses, accs = [], []
        with torch.no_grad():
            for start in range(0, block.shape[0], c):
                loss, correct = self._evaluate_block(block[start : start + c], e)
                losses.append(loss)
                accs.append(correct / self.num_examples)
        return torch.cat(losses).cpu().numpy(), torch.cat(accs).cpu().numpy()


def evaluate_points(model: nn.Module, loss_fn: LossFn, data: Data, points, **options):
    """(loss, accuracy) arrays at each point; ``options`` as for :class:`PointEvaluator`."""
    return PointEvaluator(model, loss_fn, data, **options)(points)
