"""Device-resident batching: seeded epoch permutations sliced into index batches.

The permutation is drawn by a CPU :class:`torch.Generator` seeded from ``(seed, epoch)`` only,
then moved to the device: it never touches the global RNG, is the same on every device, and
an interrupted epoch can be resumed exactly (``start``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import torch

from sgdlab.errors import ConfigError

_MASK = 0xFFFFFFFFFFFFFFFF


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed that depends only on ``(seed, epoch)``."""
    words = [seed & _MASK, epoch & _MASK, zlib.crc32(b"epoch-permutation")]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


def step_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed that depends only on ``(seed, step)`` (the training-input
    noise of a step), independent of :func:`epoch_seed`'s stream."""
    words = [seed & _MASK, step & _MASK, zlib.crc32(b"input-noise")]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


def epoch_permutation(
    n: int, seed: int, epoch: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """A permutation of ``range(n)`` (int64, on ``device``) depending only on ``(seed, epoch)``."""
    g = torch.Generator(device="cpu").manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g).to(device)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Number of full batches in an epoch (the last partial batch is dropped)."""
    _check(n, batch_size)
    return n // batch_size


def iterate_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    device: str | torch.device = "cpu",
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """Index tensors of exactly ``batch_size`` examples, slices of :func:`epoch_permutation`.

    The last partial batch is dropped, so every step sees ``batch_size`` examples;
    ``batch_size == n`` gives one full batch; the first ``start`` batches are skipped
    (resuming mid-epoch).
    """
    count = batches_per_epoch(n, batch_size)
    if start >= count:
        return
    perm = epoch_permutation(n, seed, epoch, device)
    for i in range(max(start, 0), count):
        yield perm[i * batch_size : (i + 1) * batch_size]


def _check(n: int, batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size > n:
        raise ConfigError(f"optim.batch_size: {batch_size} exceeds the {n} training examples")
