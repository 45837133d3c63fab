"""Explicit random streams: every random draw goes through a ``torch.Generator``."""

from __future__ import annotations

import torch
from torch import Tensor


def make_generator(
    generator: torch.Generator | None, seed: int | None, device: torch.device
) -> torch.Generator:
    """The given generator, or a new one on ``device`` seeded with ``seed`` (default 0)."""
    if generator is not None:
        if seed is not None:
            raise ValueError("pass either generator= or seed=, not both")
        return generator
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else int(seed))
    return gen


def randn(
    shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Standard normal entries drawn from ``gen`` (on its device), returned on ``device``."""
    return torch.randn(shape, generator=gen, device=gen.device, dtype=dtype).to(device)


def rademacher(
    shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Independent ±1 entries with probability 1/2 each."""
    bits = torch.randint(0, 2, shape, generator=gen, device=gen.device, dtype=torch.int8)
    return bits.to(device=device, dtype=dtype) * 2 - 1
