"""Vectorized ensembles: several runs of one architecture trained as one stacked model.

Runs that share the architecture, the data pipeline's shape and the batch schedule, but
differ in anything the optimizer or the data draw decides (learning rate and its schedule,
momentum, weight decay, Nudged SGD's γ, the seed: initialization, batch order, subsets,
label-noise draw), take their steps together: the M members' parameters are stacked into
one tensor per parameter, shape ``(M, *shape)``, and one forward and one backward pass
compute every member's mini-batch gradient,

    L(θ_1..θ_M) = Σ_m L_m(θ_m),   ∂L/∂θ_m = ∇L_m(θ_m)   (the members do not interact).

Everything else is each member's own :class:`~sgdlab.train.loop.Trainer`, unchanged: its
data (through the process's data cache), model initialization, optimizer, probes, sinks,
evaluation, checkpoints and divergence. The trick that lets them reuse the trainer is that
each member's ``nn.Module`` keeps its parameters, but their storage is a slice of the stack
(``p.data = W[m]``, ``p.grad = W.grad[m]``): the member's optimizer steps (exactly the lone
run's arithmetic, Nudged SGD included) write into the stack, and its probes, evaluation and
checkpoints read an ordinary, unstacked model. A member that diverges, fails or ends leaves
the stack, which is rebuilt from the others; the others go on.

Two stacked forward passes, measured in ``bench/sweep.py``: ``vmap`` (``torch.func``:
``functional_call`` over the stacked parameters, any architecture without buffers) and
``bmm`` (MLPs: batched matrix products; when every member sees the same batch, the first
layer is one wide matrix product over all members' units).

Not stackable (the executor trains these alone): dropout (each lone run draws its masks
from the global generator, which a stack cannot reproduce) and buffers (BatchNorm's running
statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sgdlab.losses import per_example_loss
from sgdlab.models import MLP
from sgdlab.train.loop import Trainer

BACKENDS = ("auto", "vmap", "bmm")
_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.ELU)


def unstackable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained in a stack (None if it can)."""
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return "dropout"
    if any(True for _ in model.buffers()):
        return "buffers (BatchNorm)"
    return None


def mlp_layers(model: nn.Module) -> list[nn.Module] | None:
    """The layers of a plain MLP (Flatten, Linear, elementwise activations) in order, or
    None if ``model`` is anything else."""
    if not isinstance(model, MLP) or type(model).forward is not MLP.forward:
        return None
    layers = [*model.features, model.classifier]
    ok = all(isinstance(m, (nn.Flatten, nn.Linear, *_ACTIVATIONS)) for m in layers)
    return layers if ok else None


class StackedModel:
    """M members' parameters stacked; :meth:`losses` gives each member's mean loss."""

    def __init__(self, models: Sequence[nn.Module], loss: str, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.loss = loss
        self.base = models[0]
        self.layers = mlp_layers(self.base)
        if backend == "auto":
            backend = "bmm" if self.layers is not None else "vmap"
        if backend == "bmm" and self.layers is None:
            raise ValueError("the bmm backend takes MLPs only")
        self.backend = backend
        self.names = [n for n, _ in self.base.named_parameters()]
        if self.layers is not None:
            where = {id(mod): n for n, mod in self.base.named_modules()}
            self.layer_names = [where[id(layer)] for layer in self.layers]
        self.restack(models)

    def restack(self, models: Sequence[nn.Module]) -> None:
        """Stack the current parameters of ``models`` and make theirs slices of the stack."""
        self.models = list(models)
        own = [dict(m.named_parameters()) for m in self.models]
        self.params = {n: torch.stack([p[n].detach() for p in own]).requires_grad_()
                       for n in self.names}
        self.member_params = [[p[n] for n in self.names] for p in own]
        for i, p in enumerate(own):
            for n in self.names:
                p[n].data = self.params[n].data[i]

    def point_grads(self) -> None:
        """Make each member's ``.grad`` its slice of the stack's gradient."""
        grads = [self.params[n].grad for n in self.names]
        for i, params in enumerate(self.member_params):
            for p, g in zip(params, grads):
                p.grad = g[i]

    def __len__(self) -> int:
        return len(self.models)

    def losses(self, x: Tensor, y: Tensor, shared: bool) -> Tensor:
        """(M,) mean losses on the members' batches: ``x`` (M, B, ...) and ``y`` (M, B,
        ...), or one (B, ...) batch for every member when ``shared``."""
        out = self._bmm(x, shared) if self.backend == "bmm" else self._vmap(x, shared)
        m, b = out.shape[:2]
        if shared:
            y = y.expand(m, *y.shape)
        per = per_example_loss(self.loss, out.reshape(m * b, -1), y.reshape(m * b, *y.shape[2:]))
        return per.view(m, b).mean(dim=1)

    def _vmap(self, x: Tensor, shared: bool) -> Tensor:
        from torch.func import functional_call, vmap

        def forward(params, xb):
            return functional_call(self.base, params, (xb,))

        return vmap(forward, in_dims=(0, None if shared else 0))(self.params, x)

    def _bmm(self, x: Tensor, shared: bool) -> Tensor:
        m = len(self.models)
        h = x
        flat = not shared  # h is (M, B, d) once the first Linear has run (or if not shared)
        for name, layer in zip(self.layer_names, self.layers):
            if isinstance(layer, nn.Flatten):
                h = h.flatten(1 + flat)
            elif isinstance(layer, nn.Linear):
                w, b = self.params[f"{name}.weight"], self.params.get(f"{name}.bias")
                if not flat:  # one wide product: every member's units at once
                    out = F.linear(h, w.reshape(-1, w.shape[-1]),
                                   None if b is None else b.reshape(-1))
                    h = out.view(h.shape[0], m, w.shape[1]).transpose(0, 1)
                    flat = True
                elif b is None:
                    h = torch.bmm(h, w.transpose(1, 2))
                else:
                    h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            else:
                h = layer(h)
        return h


@dataclass
class Member:
    """One run of the ensemble: its trainer, its open session and how it ended."""

    trainer: Trainer
    session: object  # the trainer's session context manager, entered
    status: str | None = None


def stack_key(trainer: Trainer) -> tuple:
    """What members of one stack must share: parameter shapes, the batch plan, the loss,
    the training position, the device and the dtype."""
    shapes = tuple((n, tuple(p.shape)) for n, p in trainer.model.named_parameters())
    return (type(trainer.model).__name__, shapes, tuple(trainer.plan.batch_sizes),
            trainer.plan.total_steps, trainer.data.n_train, trainer.cfg.train.loss,
            str(trainer.device), trainer.dtype, trainer.step)


def train_stacked(members: list[Member], backend: str = "auto") -> None:
    """Train members that share :func:`stack_key` to their end in one stack; each member's
    ``status`` is set (finished, diverged, or failed: its session ended with the error)."""
    active = [m for m in members if m.status is None]
    if not active:
        return
    t0 = active[0].trainer
    if t0.step >= t0.plan.total_steps:  # killed after the last checkpoint: finish each
        for m in active:
            _end(m, lambda tr: tr._finish())
        return
    stack = StackedModel([m.trainer.model for m in active], t0.cfg.train.loss, backend)
    trainers = [m.trainer for m in active]
    shared = _share_batches(trainers)
    try:
        while active:
            batches = [tr.next_batch() for tr in trainers]
            first = trainers[0]
            if shared:
                xs, ys = first.batch(first.data.x_train, first.data.y_train, batches[0][0])
                x_of = [(xs, ys)] * len(trainers)
            else:
                x_of = [tr.batch(tr.data.x_train, tr.data.y_train, i)
                        for tr, (i, _) in zip(trainers, batches)]
                xs = torch.stack([x for x, _ in x_of])
                ys = torch.stack([y for _, y in x_of])
            for w in stack.params.values():
                w.grad = None
            losses = stack.losses(xs, ys, shared)
            losses.sum().backward()
            stack.point_grads()
            ended = False
            for i, (m, (_, lr)) in enumerate(zip(active, batches)):
                x, y = x_of[i]
                ended |= _step(m, losses[i], lr, x, y)
            if ended:
                active = [m for m in active if m.status is None]
                trainers = [m.trainer for m in active]
                if active:
                    stack.restack([m.trainer.model for m in active])
                    shared = _share_batches(trainers)
    except BaseException as exc:  # the stack itself failed: every member still active fails
        for m in active:
            if m.status is None:
                m.status = "failed"
                m.session.__exit__(type(exc), exc, exc.__traceback__)
        raise


def _share_batches(trainers: list) -> bool:
    """One batch serves every member: the same data, seed (batch order) and input noise."""
    first = trainers[0]
    return all(tr.data is first.data and tr.cfg.seed == first.cfg.seed
               and tr.cfg.train.input_noise == first.cfg.train.input_noise for tr in trainers)


def _step(member: Member, loss: Tensor, lr: float, x: Tensor, y: Tensor) -> bool:
    """The member's own end of the step; True if the member ended."""
    return _end(member, lambda tr: tr.finish_step(loss, lr, x, y))


def _end(member: Member, action) -> bool:
    try:
        status = action(member.trainer)
    except Exception as exc:  # this member fails alone; its session records why
        member.status = "failed"
        member.session.__exit__(type(exc), exc, exc.__traceback__)
        return True
    if status is None:
        return False
    member.status = status
    member.session.__exit__(None, None, None)
    return True
