"""The ensemble executor: a sweep's stackable points trained as vectorized ensembles.

Points whose configs agree on everything but what a member may choose alone
(:data:`MEMBER_FIELDS`: the optimizer's settings but the batch schedule, the seed, the
label-noise and input-corruption draw, the probes, the evaluation and checkpoint cadence)
form one group; each group trains as one stack in this process
(:func:`sgdlab.train.ensemble.train_stacked`), at most ``max_members`` at a time. Points
that cannot be stacked (dropout, BatchNorm: see :mod:`sgdlab.train.ensemble`) go to a
fallback executor (by default one worker process), said in one line on stderr.

Each member is a normal run: created, resumed, finished, diverged or failed in the store as
if it had trained alone. A resumed member joins the stack of the members at its step.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from sgdlab.sweep.executors import (
    Executor,
    Outcome,
    Task,
    WorkerProcesses,
    failed_outcome,
    failure_message,
)

if TYPE_CHECKING:
    from sgdlab.store import Store

# config fields that the members of one stack may set each their own way
MEMBER_FIELDS = (
    "name", "group", "seed", "probes",
    "optim.name", "optim.lr", "optim.momentum", "optim.nesterov", "optim.weight_decay",
    "optim.nsgd_gamma", "optim.nsgd_k", "optim.nsgd_every", "optim.nsgd_subset",
    "optim.lr_schedule",
    "data.label_noise", "data.input_corruption", "data.input_corruption_fraction",
    "data.noise_std",
    "train.eval_every", "train.eval_epochs", "train.eval_splits", "train.eval_batch_size",
    "train.checkpoint_every", "train.checkpoint_epochs", "train.keep_checkpoints",
)


def group_key(config) -> str:
    """The config with :data:`MEMBER_FIELDS` removed, as canonical JSON: points with equal
    keys can share a stack."""
    import json

    data = config.to_dict()
    for dotted in MEMBER_FIELDS:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return json.dumps(data, sort_keys=True)


def not_stackable(config) -> str | None:
    """Why a point cannot join a stack, from its config alone (None if it may)."""
    if config.model.dropout > 0:
        return "dropout"
    if config.model.batchnorm:
        return "batchnorm"
    return None


class Ensemble(Executor):
    """Stackable points in vectorized ensembles in this process (``backend``: ``auto``,
    ``vmap`` or ``bmm``, see :class:`sgdlab.train.ensemble.StackedModel`); the others on
    ``fallback`` (default: one worker process), after the ensembles."""

    name = "ensemble"

    def __init__(self, backend: str = "auto", max_members: int = 64,
                 fallback: Executor | None = None) -> None:
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, got {max_members}")
        self.backend, self.max_members = backend, max_members
        self.fallback = fallback
        self._active: Executor | None = None

    def run(self, tasks: Sequence[Task], store: Store) -> Iterator[tuple[Task, Outcome]]:
        groups: dict[str, list[Task]] = {}
        alone: list[tuple[Task, str]] = []
        for task in tasks:
            reason = not_stackable(task.config)
            if reason is None:
                groups.setdefault(group_key(task.config), []).append(task)
            else:
                alone.append((task, reason))
        later: list[tuple[Task, str]] = []
        for group in groups.values():
            for i in range(0, len(group), self.max_members):
                chunk = group[i:i + self.max_members]
                yield from self._train_group(chunk, store, later)
        alone += later
        if alone:
            reasons = sorted({r for _, r in alone})
            print(f"sgdlab: ensemble: {len(alone)} of {len(tasks)} points cannot be stacked "
                  f"({', '.join(reasons)}); the worker executor trains them", file=sys.stderr,
                  flush=True)
            self._active = self.fallback or WorkerProcesses(1)
            yield from self._active.run([t for t, _ in alone], store)

    def _train_group(self, tasks: list[Task], store: Store, later: list
                     ) -> Iterator[tuple[Task, Outcome]]:
        from sgdlab.train.ensemble import Member, stack_key, train_stacked, unstackable
        from sgdlab.train.loop import Trainer, resumable

        opened: list[tuple[Task, Member]] = []
        for task in tasks:
            try:
                if task.action == "resume":
                    run, cfg = resumable(store, task.run_id)
                else:
                    run, cfg = None, task.config
                trainer = Trainer(cfg, progress=False)
                reason = unstackable(trainer.model)
                if reason is not None:
                    later.append((task, reason))
                    continue
                trainer.rng_cpu = _rng_state()  # the state a lone run has after its init
                if run is None:
                    run = store.create_run(cfg.to_dict(), name=cfg.name, group=cfg.group or None)
                session = trainer.session(run, resume=task.action == "resume")
                session.__enter__()
            except Exception as exc:
                yield task, failed_outcome(task, store, exc)
                continue
            opened.append((task, Member(trainer, session)))
        by_key: dict[tuple, list[tuple[Task, Member]]] = {}
        for task, member in opened:
            by_key.setdefault(stack_key(member.trainer), []).append((task, member))
        for group in by_key.values():
            error = None
            try:
                train_stacked([m for _, m in group], self.backend)
            except Exception as exc:  # every member still training was marked failed
                error = failure_message(exc)
            for task, member in group:
                run = member.trainer.run
                status = member.status or "failed"
                yield task, Outcome(run.id, status, None if status == "finished"
                                    else run.message or error)

    def close(self) -> None:
        if self._active is not None:
            self._active.close()


def _rng_state():
    import torch

    return torch.get_rng_state()
