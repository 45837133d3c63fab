"""The mean loss of a model over a dataset as a pure function of selected parameters.

``ModelFunction`` is the shared plumbing of the Hessian, GGN and gradient-covariance
operators. It defines

    L(θ) = (1/N) Σ_b n_b · loss_fn(f(θ; x_b), y_b),        N = Σ_b n_b,

over the batches b of the data (one ``(x, y)`` pair, or an iterable of pairs, each
optionally split into chunks of ``chunk_size`` examples), so chunked data gives the same
function as one big batch when ``loss_fn`` returns the mean over its batch.

The model itself is never modified: the forward pass runs through
``torch.func.functional_call`` with detached copies of the selected parameters (the
"primals") and copies of the buffers; the train/eval flags of every submodule are set
only for the duration of a call and then restored; in train mode BatchNorm layers stop
tracking running statistics during the call (their outputs are unchanged: train-mode
BatchNorm normalizes with batch statistics), and randomness in the forward pass (dropout)
is drawn inside ``torch.random.fork_rng`` from a seed fixed per chunk, so the global RNG
is left as it was and the operator is a deterministic function.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from sgdlab.curvature.flat import flatten, unflatten
from sgdlab.curvature.linop import LinearOperator, ieee_float32
from sgdlab.curvature.options import CurvatureOptions, ParamSpec

Batch = tuple[Tensor, Tensor]
Data = Batch | Iterable[Batch]
LossFn = Callable[[Tensor, Tensor], Tensor]


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


def select_parameters(model: nn.Module, params: ParamSpec) -> list[str]:
    """Names of the parameters the operator differentiates, in ``named_parameters`` order.

    ``params`` is None (every parameter with ``requires_grad``), a list of parameter
    tensors of the model, a list of names, or a predicate on names.
    """
    named = list(model.named_parameters())
    if params is None:
        names = [n for n, p in named if p.requires_grad]
    elif callable(params):
        names = [n for n, _ in named if params(n)]
    else:
        params = list(params)
        if all(isinstance(p, str) for p in params):
            known = {n for n, _ in named}
            unknown = [p for p in params if p not in known]
            if unknown:
                raise ValueError(f"params: no parameter named {unknown[0]!r} in the model")
            wanted = set(params)
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


def _as_batches(data: Data, chunk_size: int | None) -> list[Batch]:
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        batches = [(data[0], data[1])]
    else:
        try:
            batches = [tuple(b) for b in data]  # type: ignore[union-attr]
        except TypeError as err:
            raise ValueError(
                "data must be a pair (x, y) of tensors or an iterable of such pairs"
            ) from err
        if not batches or any(len(b) != 2 for b in batches):
            raise ValueError(
                "data must be a pair (x, y) of tensors or a non-empty iterable of such pairs"
            )
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        batches = [
            (xs, ys)
            for x, y in batches
            for xs, ys in zip(x.split(int(chunk_size)), y.split(int(chunk_size)))
        ]
    for x, y in batches:
        if len(x) != len(y):
            raise ValueError(f"data: a batch has {len(x)} inputs but {len(y)} targets")
    return batches


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


class ModelFunction:
    """Functional view of (model, loss_fn, data) under ``options``; see the module docstring."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Data,
                 options: CurvatureOptions | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        opts = options or CurvatureOptions()
        self.model, self.loss_fn = model, loss_fn
        self.train, self.seed = bool(opts.train), int(opts.seed)
        self.names = select_parameters(model, opts.params)
        named = dict(model.named_parameters())
        first = named[self.names[0]]
        self.device = first.device
        self.dtype = opts.dtype or first.dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {self.dtype}")
        self.primals = tuple(named[n].detach().to(self.dtype).clone() for n in self.names)
        self.shapes = [p.shape for p in self.primals]
        self.dim = sum(p.numel() for p in self.primals)
        selected = set(self.names)
        self.frozen = {n: self._cast(p.detach()) for n, p in named.items() if n not in selected}
        self.frozen.update({n: self._cast(b.detach()).clone() for n, b in model.named_buffers()})
        self.memory_budget = int(opts.memory_budget or default_memory_budget(self.device))
        self._graph_bytes: float | None = None
        self.set_batches(_as_batches(data, opts.chunk_size))

    # ----------------------------------------------------------------- data
    def set_batches(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.sizes = [len(y) for _, y in batches]
        self.num_examples = sum(self.sizes)
        if self.num_examples == 0:
            raise ValueError("data contains no example")
        nbytes = sum(
            x.numel() * x.element_size() + y.numel() * y.element_size() for x, y in batches
        )
        self._cache: dict[int, Batch] | None = {} if nbytes <= self.memory_budget // 8 else None

    def rechunk(self, chunk_size: int) -> None:
        """Split every batch into chunks of at most ``chunk_size`` examples."""
        self.set_batches(_as_batches(self.batches, chunk_size))

    def _cast(self, t: Tensor) -> Tensor:
        if t.is_floating_point():
            return t.to(device=self.device, dtype=self.dtype)
        return t.to(device=self.device)

    def batch(self, i: int) -> Batch:
        """Chunk i on the parameters' device, floating tensors in the working dtype."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        x, y = self.batches[i]
        out = (self._cast(x), self._cast(y))
        if self._cache is not None:
            self._cache[i] = out
        return out

    def weight(self, i: int) -> float:
        """n_i / N: the weight of chunk i's mean loss in the mean over the data."""
        return self.sizes[i] / self.num_examples

    # ------------------------------------------------------------ functions
    @contextlib.contextmanager
    def mode(self) -> Iterator[None]:
        """The model in the operator's train/eval mode, TF32 off on CUDA."""
        with model_mode(self.model, self.train), ieee_float32(self.device):
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

    def outputs(self, params: Sequence[Tensor], x: Tensor) -> Tensor:
        """f(θ; x) with θ the selected parameters (other parameters and buffers frozen)."""
        mapping: dict[str, Any] = dict(self.frozen)
        mapping.update(zip(self.names, params))
        return functional_call(self.model, mapping, (x,))

    def chunk_loss(self, params: Sequence[Tensor], i: int, y: Tensor | None = None) -> Tensor:
        """(n_i / N) · loss_fn(f(θ; x_i), y_i); summing over i gives the mean loss L(θ).

        ``y`` overrides the stored targets (to pass them through a torch.func transform).
        """
        x, y0 = self.batch(i)
        y = y0 if y is None else y
        with self.rng(i):
            out = self.outputs(params, x)
        return self.loss_fn(out, y) * self.weight(i)

    def per_sample_losses(self, out: Tensor, y: Tensor) -> Tensor:
        """ℓ_j = loss_fn(out_j[None], y_j[None]) for every example j of a chunk.

        For a mean loss, mean_j ℓ_j = loss_fn(out, y) (exactly so for cross-entropy and
        MSE with mean reduction); ``loss_fn`` must be vmappable.
        """
        return vmap(lambda o, t: self.loss_fn(o.unsqueeze(0), t.unsqueeze(0)))(out, y)

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
    def graph_bytes_per_example(self, probe: int = 64) -> float:
        """Bytes per example of the graph kept by a create_graph gradient (measured once, on
        a probe of ``probe`` examples).

        On CUDA: growth of allocated memory; elsewhere: sizes of the tensors autograd saves
        (``saved_tensors_hooks``), parameters excluded (callers add a factor for temporaries).
        """
        if self._graph_bytes is not None:
            return self._graph_bytes
        x, y = self.batch(0)
        n = min(probe, len(y))
        x, y = x[:n], y[:n]
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
            loss = self.loss_fn(self.outputs(leaves, x), y)
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

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Data,
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

    def fit_forward_mode_chunks(self) -> None:
        """Unless the caller chose ``chunk_size``, rechunk so that a forward-mode pass (it
        keeps primal and tangent activations: about twice a graph) fits a quarter of the
        memory budget."""
        fn = self.fn
        if self.options.chunk_size is None:
            per_example = 2 * fn.graph_bytes_per_example()
            chunk = max(1, int(fn.memory_budget / (4 * per_example)))
            if max(fn.sizes) > chunk:
                fn.rechunk(chunk)
