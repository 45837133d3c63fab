"""Data for curvature operators: batches of any structure, their examples and chunks.

``data`` is one batch, an iterable of batches (a list, a generator, a ``DataLoader``) or a
map-style dataset of examples (``TensorDataset`` or any ``torch.utils.data.Dataset``,
collated into one batch by ``default_collate``). One batch is a tuple or list of tensors
(``(x, y)`` by default), or a dict (``model(**batch)``); nested tuples, lists and dicts
work too. The examples of a batch are the leading dimension of its tensors: the first
tensor with a dimension gives the count ``n``, and splitting a batch slices every tensor
whose leading dimension is ``n`` (other entries, e.g. a shared mask or a number, go to
every chunk whole). Structures are walked with torch's pytree utilities, the ones
``torch.func`` uses for its own inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor
from torch.utils import _pytree as pytree
from torch.utils.data import Dataset, IterableDataset, TensorDataset, default_collate

Batch = Any


def _normalized(batch: Any) -> Any:
    """Mappings (e.g. Hugging Face's ``BatchEncoding``) as plain dicts, lists as tuples."""
    if isinstance(batch, Mapping) and not isinstance(batch, dict):
        return dict(batch)
    if isinstance(batch, list):
        return tuple(batch)
    return batch


def _one_batch(data: Any) -> bool:
    if isinstance(data, Mapping):
        return True
    return isinstance(data, (tuple, list)) and len(data) > 0 and all(
        isinstance(t, Tensor) for t in data)


def as_batches(data: Any) -> list[Batch]:
    """The list of batches that ``data`` holds (module docstring)."""
    if isinstance(data, TensorDataset):
        batches = [tuple(data.tensors)]
    elif isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        batches = [default_collate([data[i] for i in range(len(data))])]  # type: ignore[arg-type]
    elif _one_batch(data):
        batches = [data]
    elif isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise ValueError("data must be a batch (e.g. a pair (x, y) of tensors, or a dict), an "
                         "iterable of batches or a dataset of examples, got "
                         f"{type(data).__name__}")
    else:
        batches = list(data)
    batches = [_normalized(b) for b in batches]
    if not batches:
        raise ValueError("data contains no batch")
    return batches


def tensors(batch: Batch) -> list[Tensor]:
    return [t for t in pytree.tree_leaves(batch) if isinstance(t, Tensor)]


def batch_size(batch: Batch) -> int:
    """The number of examples: the leading dimension of the batch's first tensor that has
    one."""
    for t in tensors(batch):
        if t.ndim:
            return int(t.shape[0])
    raise ValueError("data: a batch has no tensor with a batch dimension (a batch of examples "
                     "is needed; iterate a DataLoader, not a dataset's single examples)")


def check_pair(batch: Batch) -> None:
    """The default ``(x, y)`` convention: two tensors with as many inputs as targets."""
    if not (isinstance(batch, tuple) and len(batch) == 2
            and all(isinstance(t, Tensor) for t in batch)):
        raise ValueError("data: a batch must be a pair (x, y) of tensors (or pass forward= and "
                         "loss= for batches of another structure)")
    x, y = batch
    if y.ndim == 0:
        raise ValueError("data: a batch's targets are a 0-d tensor, i.e. one example: pass "
                         "a dataset of examples (e.g. TensorDataset) or batches (a DataLoader)")
    if x.ndim == 0 or len(x) != len(y):
        raise ValueError(f"data: a batch has {len(x) if x.ndim else 0} inputs but {len(y)} "
                         "targets")


def map_tensors(fn: Callable[[Tensor], Tensor], batch: Batch) -> Batch:
    """``batch`` with ``fn`` applied to every tensor."""
    return pytree.tree_map(lambda t: fn(t) if isinstance(t, Tensor) else t, batch)


def _per_example(t: Any, n: int) -> bool:
    return isinstance(t, Tensor) and t.ndim > 0 and t.shape[0] == n


def split(batch: Batch, size: int) -> list[Batch]:
    """Chunks of at most ``size`` examples (module docstring)."""
    n = batch_size(batch)
    if n <= size:
        return [batch]
    leaves, spec = pytree.tree_flatten(batch)
    return [
        pytree.tree_unflatten([t[s : s + size] if _per_example(t, n) else t for t in leaves], spec)
        for s in range(0, n, size)
    ]


def head(batch: Batch, n: int) -> Batch:
    """The first ``n`` examples of ``batch`` (one slice, not :func:`split`'s every chunk)."""
    size = batch_size(batch)
    if size <= n:
        return batch
    leaves, spec = pytree.tree_flatten(batch)
    return pytree.tree_unflatten([t[:n] if _per_example(t, size) else t for t in leaves], spec)


def example_dims(batch: Batch) -> Any:
    """``in_dims`` for ``torch.func.vmap`` over the examples of ``batch``: 0 for the tensors
    that hold one slice per example, None for the rest."""
    n = batch_size(batch)
    leaves, spec = pytree.tree_flatten(batch)
    return pytree.tree_unflatten([0 if _per_example(t, n) else None for t in leaves], spec)


def as_one_example(example: Batch, dims: Any) -> Batch:
    """Inside ``vmap``: one example's slice with its batch dimension of 1 restored."""
    leaves, spec = pytree.tree_flatten(example)
    flags = pytree.tree_flatten(dims, is_leaf=lambda d: d is None)[0]
    return pytree.tree_unflatten(
        [t.unsqueeze(0) if d == 0 else t for t, d in zip(leaves, flags)], spec)


def floating(batch: Batch) -> tuple[list[Tensor], Callable[[list[Tensor]], Batch]]:
    """The floating tensors of ``batch`` and a function putting replacements back: lets
    a ``torch.func`` transform take them as explicit inputs (with zero tangents)."""
    leaves, spec = pytree.tree_flatten(batch)
    where = [i for i, t in enumerate(leaves) if isinstance(t, Tensor) and t.is_floating_point()]

    def rebuild(values: list[Tensor]) -> Batch:
        new = list(leaves)
        for i, v in zip(where, values):
            new[i] = v
        return pytree.tree_unflatten(new, spec)

    return [leaves[i] for i in where], rebuild


def nbytes(batch: Batch) -> int:
    return sum(t.numel() * t.element_size() for t in tensors(batch))
