"""The generalized Gauss–Newton matrix as a linear operator.

    G = Σ_b (n_b / N) J_bᵀ H_b J_b,   J_b = ∂f(θ; x_b)/∂θ,
    H_b = ∇²_z loss_fn(z, y_b) at z = f(θ; x_b).

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

from sgdlab.curvature.flat import flatten
from sgdlab.curvature.model_function import ModelOperator


class GGNOperator(ModelOperator):
    """G = Jᵀ H_out J of the mean loss (arguments as :class:`HessianOperator`; one backend,
    forward-over-reverse with ``torch.func``)."""

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
                x, y = fn.batch(i)

                def f(p: tuple[Tensor, ...], i: int = i, x: Tensor = x) -> Tensor:
                    with fn.rng(i):
                        return fn.outputs(p, x)

                z, pullback = vjp(f, fn.primals)
                z = z.detach()
                gz = grad(lambda o, t: fn.loss_fn(o, t))
                y_t = torch.zeros_like(y) if y.is_floating_point() else None

                def ggn_v(
                    t: tuple[Tensor, ...], f=f, z=z, y=y, y_t=y_t, gz=gz, pullback=pullback
                ) -> Tensor:
                    jv = jvp(f, (fn.primals,), (t,))[1]
                    if y_t is None:  # explicit zero tangent for float targets: pytorch#123996
                        hjv = jvp(lambda o: gz(o, y), (z,), (jv,))[1]
                    else:
                        hjv = jvp(gz, (z, y), (jv, y_t))[1]
                    return flatten(pullback(hjv)[0])

                if self.batched and m > 1:
                    res = vmap(ggn_v, randomness="same")(tuple(vs))
                else:
                    res = torch.stack([ggn_v(tuple(v[r] for v in vs)) for r in range(m)])
                out += fn.weight(i) * res
        return out
