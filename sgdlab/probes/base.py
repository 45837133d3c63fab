"""The probe protocol: measurements taken along training without disturbing it.

A probe has a ``name``, a :class:`Schedule`, and hooks with no-op defaults. Each hook
receives a :class:`ProbeContext` and returns ``None`` or a dict: scalar values become
metrics ``"<name>/<key>"`` at the current step, array values are stored as arrays under the
probe's name. Probes never write files and never touch the global random generator:
each gets its own ``ctx.generator``; the trainer also runs every hook under
``torch.random.fork_rng`` and restores train/eval modes, so a run with and without probes
ends with bit-identical parameters on CPU.

Work is shared through ``ctx.shared``, a cache cleared at every step, and ``ctx.eigs``
(:class:`~sgdlab.curvature.shared.SharedEigs`). Before the probes due at a step run,
:meth:`ProbeRunner.call` plans their :meth:`Probe.eig_request`, so the first
:meth:`ProbeContext.top_eigs` call computes one decomposition with the largest k and the
tightest tolerance any of them asked for on that subset; the others reuse it, whatever
their order. Nudged SGD refreshes before them with exactly its own request (so that probes
cannot change its trajectory); the probes reuse its result when it satisfies them, else
one more decomposition covers them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sgdlab.curvature.shared import SharedEigs
from sgdlab.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """When a probe measures: every ``every`` steps, at the start of each epoch
    (``every="epoch"``), only once at the end (``every="end"``), or at ``log_points``
    log-spaced steps over the run. The end of training (step = total steps, after the last
    update) is always included; step 0 too, except for ``"end"``."""

    every: int | str = "epoch"
    log_points: int = 0

    @classmethod
    def parse(cls, spec: dict[str, Any], where: str) -> Schedule:
        every, log_points = spec.get("every", "epoch"), spec.get("log_points", 0)
        if not (every in ("epoch", "end") or (isinstance(every, int)
                                              and not isinstance(every, bool) and every > 0)):
            raise ConfigError(
                f"{where}.every: must be a positive integer, 'epoch' or 'end', got {every!r}")
        if not isinstance(log_points, int) or log_points < 0:
            raise ConfigError(f"{where}.log_points: must be a non-negative integer")
        return cls(every, log_points)

    def steps(self, total_steps: int) -> set[int] | None:
        """The explicit set of due steps for a log schedule, else None."""
        if not self.log_points:
            return None
        pts = torch.logspace(0, math.log10(max(total_steps, 1)), self.log_points)
        return {0, total_steps} | {int(round(p.item())) for p in pts}

    def due(self, step: int, epoch_start: bool, total_steps: int,
            log_steps: set[int] | None) -> bool:
        if log_steps is not None:
            return step in log_steps
        if step == total_steps:
            return True
        if self.every == "end":
            return False
        if self.every == "epoch":
            return epoch_start
        return step % self.every == 0 or step == total_steps


class OptionError(ConfigError):
    """A bad probe option: ``probe <name>: <option> must be <expected>, got <value>``;
    :func:`~sgdlab.probes.build_probes` reports it as ``probes[i].<option>: must be ...``."""

    def __init__(self, probe: str, option: str, value: Any, expected: str) -> None:
        self.option, self.problem = option, f"must be {expected}, got {value!r}"
        super().__init__(f"probe {probe}: {option} {self.problem}")


def check_int(probe: str, option: str, value: Any, low: int = 1) -> None:
    """Raise :class:`OptionError` unless ``value`` is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptionError(probe, option, value, f"an integer >= {low}")


def check_number(probe: str, option: str, value: Any, ok: Callable[[float], bool],
                 expected: str) -> None:
    """Raise :class:`OptionError` unless ``value`` is a finite number with ``ok(value)``."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and ok(value)):
        raise OptionError(probe, option, value, expected)


class Probe:
    """Base class: override the hooks you need; each returns a dict of results or None."""

    name: str = "probe"

    def __init__(self, schedule: Schedule | None = None, **options: Any) -> None:
        self.schedule = schedule or Schedule()
        if options:
            raise ConfigError(f"probe {self.name}: unknown options {', '.join(sorted(options))}")

    def check(self, model: nn.Module, data: Any) -> None:
        """Raise ConfigError if the probe cannot measure this model or data; called before
        the run is created, so a bad probe writes nothing."""

    def eig_request(self) -> tuple[int, int, float] | None:
        """``(k, n, tol)`` if :meth:`measure` asks ``ctx.top_eigs`` for the top-k Hessian
        eigenpairs on the n-example subset, so the decomposition can be shared."""
        return None

    def on_train_start(self, ctx: ProbeContext) -> dict | None: ...
    def measure(self, ctx: ProbeContext) -> dict | None:
        """At a due step, at the current parameters theta_t (after backward, before the
        optimizer step; ``ctx.batch_grad`` holds the mini-batch gradient). Also called once
        at the end of training, after the last update, with ``ctx.batch_grad = None``."""
    def after_step(self, ctx: ProbeContext) -> dict | None:
        """At a due step, after the optimizer step; ``ctx.update`` = theta_{t+1} - theta_t."""
    def on_evaluate(self, ctx: ProbeContext) -> dict | None: ...
    def on_train_end(self, ctx: ProbeContext) -> dict | None: ...

    def state_dict(self) -> dict:
        """State saved with the checkpoint (e.g. warm-start eigenvectors)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class ProbeContext:
    """What a probe may look at. Probes must treat every tensor here as read-only."""

    model: nn.Module
    loss: str
    loss_fn: Any
    data: Any  # sgdlab.data.DataBundle
    seed: int
    step: int = 0
    epoch: int = 0
    lr: float = 0.0
    momentum: float = 0.0
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    batch_grad: torch.Tensor | None = None  # flat mini-batch gradient at theta_t
    planned_update: torch.Tensor | None = None  # flat step the optimizer is about to take
    update: torch.Tensor | None = None  # flat theta_{t+1} - theta_t
    generator: torch.Generator | None = None
    shared: dict[str, Any] = field(default_factory=dict)  # probes' own cache, cleared per step
    _subsets: dict[tuple[str, int], Any] = field(default_factory=dict)
    _eigs: SharedEigs | None = None

    def subset(self, n: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed subset of ``n`` examples of ``split`` (train or test), drawn once
        through a permutation seeded by the run seed and independent of training."""
        key = (split, n)
        if key not in self._subsets:
            x, y = (self.data.x_train, self.data.y_train) if split == "train" else (
                self.data.x_test, self.data.y_test)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 17 + (split == "test"))
            idx = torch.randperm(len(x), generator=g)[: min(n, len(x))].to(x.device)
            self._subsets[key] = (x[idx], y[idx])
        return self._subsets[key]

    @property
    def eigs(self) -> SharedEigs:
        """This step's shared Hessian eigendecompositions on fixed training subsets
        (:class:`~sgdlab.curvature.shared.SharedEigs`); the trainer clears it each step."""
        if self._eigs is None or self._eigs.model is not self.model:
            self._eigs = SharedEigs(self.model, self.loss_fn, self.subset)
        return self._eigs

    def top_eigs(self, k: int, n: int, tol: float = 1e-3, init: Any = None,
                 generator: torch.Generator | None = None):
        """Top-``k`` Hessian eigenpairs on the fixed subset of ``n`` training examples,
        shared within the step (:meth:`SharedEigs.top`, with this probe's generator by
        default); ``init`` warm-starts from the caller's previous result."""
        return self.eigs.top(k, n, tol, init=init, generator=generator or self.generator)

    def new_step(self) -> None:
        """Forget the previous step's shared results."""
        self.shared.clear()
        self.eigs.clear()
