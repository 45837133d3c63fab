"""The generalized Gauss–Newton matrix as a linear operator.

    G = Σ_b w_b J_bᵀ H_b J_b,   J_b = ∂f(θ; b)/∂θ,   w_b = n_b/N (mean) or 1 (sum),
    H_b = ∇²_z loss(z, b) at z = f(θ; b) = forward(model_θ, b).

G drops the second-order term Σ (∂loss/∂z) ∇²f of the Hessian; it is positive
semi-definite for convex losses (MSE, cross-entropy) and equals H for a model linear in
θ. Per chunk, G v = Jᵀ (H_z (J v)): a jvp through the model, a Hessian-vector product
in output space (jvp of the output gradient) and a vjp back, all with ``torch.func``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap
from torch.utils import _pytree as pytree

from sgdlab.curvature import batches as B
from sgdlab.curvature.flat import flatten
from sgdlab.curvature.model_function import ModelOperator


class GGNOperator(ModelOperator):
    """G = Jᵀ H_out J of the loss (arguments as :class:`HessianOperator`; one backend,
    forward-over-reverse with ``torch.func``; ``forward`` must return tensors)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fit_forward_mode_chunks()

    def _matmat(self, V: Tensor) -> Tensor:
        fn = self.fn
        m = V.shape[0]
        vs = fn.unflatten(V)
        out = torch.zeros_like(V)
        with fn.mode():
            for i in range(len(fn.batches)):
                batch = fn.batch(i)

                def f(p: tuple[Tensor, ...], i: int = i, batch=batch) -> Any:
                    with fn.rng(i):
                        return fn.outputs(p, batch)

                try:
                    z, pullback = vjp(f, fn.primals)
                except (RuntimeError, TypeError, ValueError):
                    check_outputs(f(fn.primals))  # a clear error for non-tensor outputs
                    raise
                check_outputs(z)
                z = B.map_tensors(Tensor.detach, z)
                # floating batch tensors as inputs with zero tangents: pytorch#123996
                floats, rebuild = B.floating(batch)
                zeros = [torch.zeros_like(t) for t in floats]
                gz = grad(lambda o, fl, rebuild=rebuild: fn.loss(o, rebuild(fl)))

                def ggn_v(t: tuple[Tensor, ...], f=f, z=z, floats=floats, zeros=zeros, gz=gz,
                          pullback=pullback) -> Tensor:
                    jv = jvp(f, (fn.primals,), (t,))[1]
                    hjv = jvp(gz, (z, floats), (jv, zeros))[1]
                    return flatten(pullback(hjv)[0])

                if self.batched and m > 1:
                    res = vmap(ggn_v, randomness="same")(tuple(vs))
                else:
                    res = torch.stack([ggn_v(tuple(v[r] for v in vs)) for r in range(m)])
                out += fn.weight(i) * res
        return out


def check_outputs(z: Any) -> None:
    """The GGN differentiates the loss twice in the model's output: it must be tensors."""
    leaves = pytree.tree_leaves(z)
    if not leaves or not all(isinstance(t, Tensor) and t.is_floating_point() for t in leaves):
        raise ValueError(
            f"matrix='ggn' needs forward(model, batch) to return a floating tensor (or a "
            f"tuple/dict of them), the output the loss is a function of; got "
            f"{type(z).__name__}: e.g. forward=lambda m, b: m(**b).logits")
