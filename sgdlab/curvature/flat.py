"""Flat parameter vectors.

Curvature operators act on the flattened parameter space R^P, with the parameter
tensors concatenated in a fixed order (``torch.cat([p.reshape(-1) for p in params])``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one vector of length P = sum of their sizes.

    >>> flatten([torch.ones(2, 2), torch.zeros(3)]).tolist()
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    if len(tensors) == 0:
        raise ValueError("flatten: got an empty list of tensors")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(
    vector: Tensor, like: Sequence[Tensor | torch.Size | tuple[int, ...]]
) -> list[Tensor]:
    """Split a vector (P,) into tensors shaped like ``like`` (tensors or shapes).

    Leading batch dimensions are kept: a block (m, P) gives tensors of shape (m, *shape).
    The results are views of ``vector`` (no copy).

    >>> [t.shape for t in unflatten(torch.arange(7.0), [(2, 2), (3,)])]
    [torch.Size([2, 2]), torch.Size([3])]
    """
    shapes = [t.shape if isinstance(t, Tensor) else torch.Size(t) for t in like]
    sizes = [s.numel() for s in shapes]
    if vector.shape[-1] != sum(sizes):
        raise ValueError(
            f"unflatten: vector has {vector.shape[-1]} entries, the shapes need {sum(sizes)}"
        )
    lead = vector.shape[:-1]
    parts = torch.split(vector, sizes, dim=-1)
    return [p.reshape(*lead, *s) for p, s in zip(parts, shapes)]
