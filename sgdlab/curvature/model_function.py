"""The loss of a model over a dataset as a pure function of selected parameters.

``ModelFunction`` is the shared plumbing of the Hessian, GGN, gradient-covariance and
Fisher operators. Over the batches b of the data (:mod:`sgdlab.curvature.batches`), each
with n_b examples and the loss ``loss_b(θ) = loss(forward(model_θ, b), b)``, it defines

    L(θ) = Σ_b w_b · loss_b(θ),    w_b = n_b / N  ("mean": loss_b is a mean over b),
                                   w_b = 1        ("sum":  loss_b is a sum over b),

N = Σ_b n_b, so that L is the mean (or the sum) of the per-example losses over all the
data, whatever the batches: unequal batches, or batches split into chunks, give the same
function in eval mode. In train mode a batch is the unit of the function (BatchNorm
normalizes with the batch's statistics): the operators never split one themselves.

The model itself is never modified: the forward pass runs through
``torch.func.functional_call`` with detached copies of the selected parameters (the
"primals") and copies of the buffers; the train/eval flags of every submodule are set
only for the duration of a call and then restored; in train mode BatchNorm layers stop
tracking running statistics during the call (their outputs are unchanged: train-mode
BatchNorm normalizes with batch statistics), and randomness in the forward pass (dropout)
is drawn inside ``torch.random.fork_rng`` from a seed fixed per chunk, so the global RNG
is left as it was and the operator is a deterministic function.

During products, :meth:`ModelFunction.mode` also selects PyTorch's math kernel for
``scaled_dot_product_attention`` (its fused kernels have no double backward and no
forward-mode derivative), turns autocast off, and, on CUDA, TF32. Products run in the
parameters' dtype, except for float16 and bfloat16 parameters (or a model run under
autocast), where they run in float32; ``dtype=torch.float64`` gives float64.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from sgdlab.curvature import batches as B
from sgdlab.curvature.calling import (
    ForwardModule,
    differentiable_kernels,
    model_mode,
    select_parameters,
)
from sgdlab.curvature.flat import flatten, unflatten
from sgdlab.curvature.linop import LinearOperator, full_precision
from sgdlab.curvature.options import CurvatureOptions, resolve_reduction

Batch = Any  # (x, y) by default; any structure with forward= and loss=
Data = Any  # a batch, an iterable of batches, or a dataset of examples
LossFn = Callable[[Tensor, Tensor], Tensor]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def default_memory_budget(device: torch.device) -> int:
    """Bytes the curvature code may use for graphs and bases: half of what is free now
    (on CUDA, memory torch holds in its cache but has not handed out counts as free)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(0.5 * (free + cached))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(0.5 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        return int(0.5 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


class ModelFunction:
    """Functional view of (model, loss, data) under ``options``; see the module docstring."""

    def __init__(self, model: nn.Module, loss_fn: LossFn | None, data: Data,
                 options: CurvatureOptions | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        opts = options or CurvatureOptions()
        if opts.loss is None and not callable(loss_fn):
            raise ValueError("loss_fn must be a callable loss_fn(output, target), or pass "
                             "loss=(output, batch) -> loss")
        if opts.loss is not None and loss_fn is not None:
            raise ValueError("pass loss_fn or loss=, not both")
        self.model, self.loss_fn = model, loss_fn
        custom = opts.forward is not None or opts.loss is not None
        self.reduction = resolve_reduction(opts, opts.loss or loss_fn)
        self.train, self.seed = bool(opts.train), int(opts.seed)
        self.names = select_parameters(model, opts.params)
        named = dict(model.named_parameters())
        first = named[self.names[0]]
        self.device = first.device
        default = torch.float32 if first.dtype in LOW_PRECISION else first.dtype
        self.dtype = opts.dtype or default
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {self.dtype}")
        self.primals = tuple(named[n].detach().to(self.dtype).clone() for n in self.names)
        self.shapes = [p.shape for p in self.primals]
        self.dim = sum(p.numel() for p in self.primals)
        selected = set(self.names)
        self.frozen = {n: self._cast(p.detach()) for n, p in named.items() if n not in selected}
        self.frozen.update({n: self._cast(b.detach()).clone() for n, b in model.named_buffers()})
        self._module: nn.Module = model
        self._prefix = ""
        if opts.forward is not None:
            self._module, self._prefix = ForwardModule(model, opts.forward), "model."
            self.frozen = {self._prefix + n: t for n, t in self.frozen.items()}
        self._loss = opts.loss or (lambda out, batch: loss_fn(out, batch[1]))
        self._names = [self._prefix + n for n in self.names]
        self.memory_budget = int(opts.memory_budget or default_memory_budget(self.device))
        self._graph_bytes: float | None = None
        batches = B.as_batches(data)
        if not custom:
            for b in batches:
                B.check_pair(b)
        if opts.chunk_size is not None:
            batches = [c for b in batches for c in B.split(b, int(opts.chunk_size))]
        self.set_batches(batches)

    # ----------------------------------------------------------------- data
    def set_batches(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.sizes = [B.batch_size(b) for b in batches]
        self.num_examples = sum(self.sizes)
        if self.num_examples == 0:
            raise ValueError("data contains no example")
        nbytes = sum(B.nbytes(b) for b in batches)
        self._cache: dict[int, Batch] | None = {} if nbytes <= self.memory_budget // 8 else None

    def rechunk(self, chunk_size: int) -> None:
        """Split every batch into chunks of at most ``chunk_size`` examples (eval mode:
        the same function; never done by the operators in train mode)."""
        self.set_batches([c for b in self.batches for c in B.split(b, int(chunk_size))])

    def _cast(self, t: Tensor) -> Tensor:
        if t.is_floating_point():
            return t.to(device=self.device, dtype=self.dtype)
        return t.to(device=self.device)

    def batch(self, i: int) -> Batch:
        """Chunk i on the parameters' device, floating tensors in the working dtype."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        out = B.map_tensors(self._cast, self.batches[i])
        if self._cache is not None:
            self._cache[i] = out
        return out

    def weight(self, i: int) -> float:
        """w_i: n_i / N for a mean loss, 1 for a sum (module docstring)."""
        return self.sizes[i] / self.num_examples if self.reduction == "mean" else 1.0

    def scaled(self, value: Any) -> Any:
        """c · value (a division by N for a mean loss, as the code before sums had it)."""
        return value / self.num_examples if self.reduction == "mean" else value

    # ------------------------------------------------------------ functions
    @contextlib.contextmanager
    def mode(self) -> Iterator[None]:
        """The model in the operator's train/eval mode, with differentiable kernels
        (:func:`differentiable_kernels`), autocast off and TF32 off on CUDA."""
        with model_mode(self.model, self.train), full_precision(self.device), \
                differentiable_kernels():
            yield

    @contextlib.contextmanager
    def rng(self, i: int) -> Iterator[None]:
        """Train mode: fork the global RNG and seed it per chunk (fixed dropout masks)."""
        if not self.train:
            yield
            return
        cuda = self.device.type == "cuda"
        index = (
            self.device.index
            if self.device.index is not None
            else torch.cuda.current_device()
            if cuda
            else 0
        )
        with torch.random.fork_rng(devices=[index] if cuda else []):
            s = (self.seed * 1_000_003 + i) % (2**63)
            torch.random.default_generator.manual_seed(s)
            if cuda:
                torch.cuda.default_generators[index].manual_seed(s)
            yield

    def outputs(self, params: Sequence[Tensor], batch: Batch) -> Any:
        """forward(model_θ, batch) with θ the selected parameters (other parameters and
        buffers frozen); by default model_θ(batch[0])."""
        mapping: dict[str, Any] = dict(self.frozen)
        mapping.update(zip(self._names, params))
        args = (batch,) if self._prefix else (batch[0],)
        return functional_call(self._module, mapping, args)

    def loss(self, out: Any, batch: Batch) -> Tensor:
        """The loss of a batch from its outputs: loss(out, batch), by default
        loss_fn(out, batch[1])."""
        return self._loss(out, batch)

    def chunk_loss(self, params: Sequence[Tensor], i: int, batch: Batch | None = None) -> Tensor:
        """w_i · loss_i(θ); summing over i gives L(θ).

        ``batch`` overrides the stored chunk (to pass its tensors through a torch.func
        transform).
        """
        batch = self.batch(i) if batch is None else batch
        with self.rng(i):
            out = self.outputs(params, batch)
        return self.loss(out, batch) * self.weight(i)

    def per_sample_losses(self, out: Any, batch: Batch) -> Tensor:
        """ℓ_j = loss(out_j, batch_j) on one example's slices (batch dimension 1) for every
        example j of a chunk; L = c Σ_j ℓ_j (exactly so for cross-entropy and MSE,
        mean or sum). ``loss`` must be vmappable."""
        dims = B.example_dims(batch)

        def one(o: Any, b: Batch) -> Tensor:
            return self.loss(B.map_tensors(lambda t: t.unsqueeze(0), o),
                             B.as_one_example(b, dims))

        return vmap(one, in_dims=(0, dims))(out, batch)

    def example_loss(self, params: Sequence[Tensor], batch: Batch) -> Tensor:
        """ℓ(θ) of a one-example batch (batch dimension 1)."""
        return self.loss(self.outputs(params, batch), batch)

    def leaves(self) -> tuple[Tensor, ...]:
        return tuple(p.detach().requires_grad_() for p in self.primals)

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        return flatten(tensors)

    def unflatten(self, v: Tensor) -> list[Tensor]:
        return unflatten(v, self.shapes)

    def gradient(self) -> Tensor:
        """∇L(θ) as a flat vector (one pass over the data)."""
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with self.mode():
            for i in range(len(self.batches)):
                leaves = self.leaves()
                g = torch.autograd.grad(
                    self.chunk_loss(leaves, i), leaves, allow_unused=True, materialize_grads=True
                )
                total += flatten(g)
        return total

    # --------------------------------------------------------------- memory
    def graph_bytes_per_example(self, probe: int = 16) -> float:
        """Bytes per example of the graph kept by a create_graph gradient (measured once, on
        a probe of ``probe`` examples: saved activations grow with the batch, so 16 measure
        them as well as 64 did, at a quarter of the cost, which at 256 examples was a
        quarter of building the graph).

        On CUDA: growth of allocated memory; elsewhere: sizes of the tensors autograd saves
        (``saved_tensors_hooks``), parameters excluded (callers add a factor for temporaries).
        """
        if self._graph_bytes is not None:
            return self._graph_bytes
        batch = B.head(self.batch(0), min(probe, self.sizes[0]))
        n = B.batch_size(batch)
        leaves = self.leaves()
        skip = {t.data_ptr() for t in (*self.primals, *self.frozen.values(), *leaves)}
        seen: set[tuple[int, int]] = set()
        total = 0

        def pack(t: Tensor) -> Tensor:
            # the tensor's own bytes, not its storage's: a slice of a big dataset is a view
            nonlocal total
            try:
                key = (t.data_ptr(), t.numel())
            except RuntimeError:  # tensors without storage (e.g. inside transforms)
                key = (id(t), t.numel())
            if key[0] not in skip and key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
            return t

        cuda = self.device.type == "cuda"
        start = torch.cuda.memory_allocated(self.device) if cuda else 0
        with self.mode(), self.rng(0), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.loss(self.outputs(leaves, batch), batch)
            grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            if cuda:  # growth minus the gradient itself (P numbers, not per example)
                grad_bytes = sum(g.numel() * g.element_size() for g in grads if g is not None)
                total = torch.cuda.memory_allocated(self.device) - start - grad_bytes
        del loss, grads
        self._graph_bytes = max(total, 1) / n
        return self._graph_bytes


# Graph bytes per chunk on the CPU when the caller sets no chunk_size. Measured on the
# benchmark CNN (418 KB of graph per example, n = 2048, 2 cores): a Hessian-vector product
# takes 2.4 s as one batch and 0.95 s in chunks of 128-256 (GGN and K products 1.8-2x
# faster too); an MLP (6 KB per example) stays in one chunk, where it is fastest.
CPU_CHUNK_BYTES = 64 << 20


class ModelOperator(LinearOperator):
    """A linear operator on R^P built on the :class:`ModelFunction` of (model, loss_fn,
    data): the shared set-up of every curvature operator of a model.

    Subclasses take the same arguments, ``(model, loss_fn, data, options=None, **fields)``
    with ``fields`` any :class:`CurvatureOptions` field, implement ``_matmat`` and may
    define ``BACKENDS`` (the accepted ``options.backend`` values, "auto" first) and
    ``exact_trace()``. ``self.options`` is what the operator was built with."""

    BACKENDS: tuple[str, ...] = ("auto",)

    def __init__(self, model: nn.Module, loss_fn: LossFn | None, data: Data,
                 options: CurvatureOptions | None = None, **fields: Any):
        opts = CurvatureOptions.build(options, **fields)
        if opts.backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {self.BACKENDS} for "
                             f"{type(self).__name__}, got {opts.backend!r}")
        fn = ModelFunction(model, loss_fn, data, opts)
        super().__init__(fn.dim, fn.dtype, fn.device)
        self.options, self.fn = opts, fn
        self.batched = fn.device.type == "cuda" if opts.batched is None else bool(opts.batched)
        if opts.chunk_size is None and fn.device.type == "cpu" and not opts.train:
            # cache-sized chunks: the same operator (eval mode), 2-2.5x faster convolutions
            chunk = max(1, int(CPU_CHUNK_BYTES / fn.graph_bytes_per_example()))
            if max(fn.sizes) > chunk:
                fn.rechunk(chunk)

    def exact_trace(self) -> float | None:
        """Tr A computed exactly without products, where the operator can (else None)."""
        return None

    def fit_chunks(self, per_example: float, share: float, what: str) -> None:
        """Unless the caller chose ``chunk_size``, split batches so that ``per_example``
        bytes times a chunk's examples fit ``share`` of the memory budget. Eval mode only:
        in train mode a batch is the unit of the function (BatchNorm statistics), never
        split; a batch over the budget is said in one warning and kept whole."""
        fn = self.fn
        if self.options.chunk_size is not None:
            return
        chunk = max(1, int(share * fn.memory_budget / per_example))
        largest = max(fn.sizes)
        if largest <= chunk:
            return
        if not fn.train:
            fn.rechunk(chunk)
            return
        warnings.warn(
            f"train=True: a batch of {largest} examples needs about "
            f"{per_example * largest / 2**20:.3g} MB for {what}, over {share:g} of "
            f"memory_budget ({fn.memory_budget / 2**20:.3g} MB), and train-mode batches are "
            "not split (their BatchNorm statistics would change): raise memory_budget or pass "
            "smaller batches", CurvatureMemoryWarning, stacklevel=4)

    def fit_forward_mode_chunks(self) -> None:
        """:meth:`fit_chunks` for a forward-mode pass (it keeps primal and tangent
        activations: about twice a graph) in a quarter of the memory budget."""
        self.fit_chunks(2 * self.fn.graph_bytes_per_example(), 0.25, "forward-mode products")


class CurvatureMemoryWarning(UserWarning):
    """A train-mode batch larger than the memory budget allows (it is not split)."""
