"""The gradient covariance (gradient noise) as a linear operator.

    K = c Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ = c (Gᵀ G − N ḡ ḡᵀ),

with g_i = ∇_θ ℓ_i(θ) the gradient of example i's loss ℓ_i = loss_fn(f(θ; x_i)[None], y_i[None]),
G the (N, P) matrix of the g_i, ḡ their mean, and c the loss's scale, L = c Σ_i ℓ_i: 1/N
for a mean loss (K is then the covariance of the per-example gradients, and ḡ the
gradient of L), 1 for a sum (K = N × that covariance, as the Hessian and GGN of a sum
are N × those of the mean).

Two routes to K v, chosen by ``backend`` (the old keyword ``route`` still works):

``"materialize"``  G by ``vmap(grad)`` + ``functional_call``, chunk by chunk, kept in memory
                   (N · P numbers, when they fit the memory budget); then K v costs two
                   matrix products and no pass over the data.
``"matrix_free"``  per chunk, the vector of per-example losses ℓ(θ) ∈ R^n has Jacobian G_c:
                   G_c v is one jvp and G_cᵀ u one vjp, so
                   K v = c (Σ_c G_cᵀ (G_c v) − N ḡ (ḡᵀ v)).
                   Memory of one chunk; valid in train mode too, where BatchNorm couples
                   the examples of a chunk (ℓ_i is then computed within its chunk).
``"auto"``         materialize when N · P fits a quarter of the budget and the model is in
                   eval mode, else matrix-free.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vjp, vmap

from sgdlab.curvature import batches as B
from sgdlab.curvature.flat import flatten
from sgdlab.curvature.model_function import Data, LossFn, ModelOperator
from sgdlab.curvature.options import CurvatureOptions

ROUTES = ("auto", "materialize", "matrix_free")


class CovarianceOperator(ModelOperator):
    """K, the covariance of per-example gradients (arguments as :class:`HessianOperator`).

    ``backend`` picks how products are computed: "auto", "materialize" or "matrix_free"
    (module docstring); ``self.route`` is the one used, ``self.mean_gradient`` is ḡ and,
    on the materialized route, ``self.centered`` is G − ḡ (N, P).
    """

    BACKENDS = ROUTES

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Data,
                 options: CurvatureOptions | None = None, **fields: Any):
        opts = CurvatureOptions.build(options, **fields)
        if opts.backend == "materialize" and opts.train:
            raise ValueError(
                "backend='materialize' computes per-example gradients one example at a time, "
                "which is not train mode (BatchNorm couples a batch); use "
                "backend='matrix_free'"
            )
        super().__init__(model, loss_fn, data, opts)
        fn = self.fn
        self.fit_forward_mode_chunks()
        fits = fn.num_examples * fn.dim * torch.finfo(fn.dtype).bits // 8 <= fn.memory_budget // 4
        route = opts.backend
        if route == "auto":
            route = "materialize" if fits and not opts.train else "matrix_free"
        self.route = route
        self.centered: Tensor | None = None
        if route == "materialize":
            G = torch.cat([self._chunk_gradients(i) for i in range(len(fn.batches))])
            self.mean_gradient = G.mean(0)
            self.centered = G.sub_(self.mean_gradient)
        else:
            ones = [torch.ones(1, n, dtype=fn.dtype, device=fn.device) for n in fn.sizes]
            self.mean_gradient = self._transpose_products(ones)[0] / fn.num_examples

    def _chunk_gradients(self, i: int) -> Tensor:
        """(n_i, P): per-example gradients of chunk i by vmap(grad) (eval mode)."""
        fn = self.fn
        batch = fn.batch(i)
        dims = B.example_dims(batch)

        def loss_one(p: tuple[Tensor, ...], example) -> Tensor:
            return fn.example_loss(p, B.as_one_example(example, dims))

        with fn.mode():
            g = vmap(grad(loss_one), in_dims=(None, dims))(fn.primals, batch)
        return torch.cat([t.reshape(fn.sizes[i], -1) for t in g], dim=1)

    def _losses(self, i: int):
        fn = self.fn
        batch = fn.batch(i)

        def losses(p: tuple[Tensor, ...]) -> Tensor:
            with fn.rng(i):
                out = fn.outputs(p, batch)
            return fn.per_sample_losses(out, batch)

        return losses

    def _transpose_products(self, us: list[Tensor]) -> Tensor:
        """Σ_c G_cᵀ u_c for per-chunk blocks u_c (m, n_c): returns (m, P)."""
        fn = self.fn
        out = None
        with fn.mode():
            for i, u in enumerate(us):
                _, pullback = vjp(self._losses(i), fn.primals)
                rows = [flatten(pullback(u[r])[0]) for r in range(u.shape[0])]
                res = torch.stack(rows)
                out = res if out is None else out + res
        return out

    def _matmat(self, V: Tensor) -> Tensor:
        fn = self.fn
        if self.centered is not None:
            return fn.scaled((V @ self.centered.T) @ self.centered)
        m = V.shape[0]
        vs = fn.unflatten(V)
        out = torch.zeros_like(V)
        with fn.mode():
            for i in range(len(fn.batches)):
                losses = self._losses(i)
                _, pullback = vjp(losses, fn.primals)

                def k_v(t: tuple[Tensor, ...], losses=losses, pullback=pullback) -> Tensor:
                    gv = jvp(losses, (fn.primals,), (t,))[1]
                    return flatten(pullback(gv)[0])

                if self.batched and m > 1:
                    out += vmap(k_v, randomness="same")(tuple(vs))
                else:
                    out += torch.stack([k_v(tuple(v[r] for v in vs)) for r in range(m)])
        g = self.mean_gradient
        return fn.scaled(out) - self.mean_weight * (V @ g)[:, None] * g[None]

    @property
    def mean_weight(self) -> float:
        """c N: the weight of ḡ ḡᵀ in c Σ_i g_i g_iᵀ = K + c N ḡ ḡᵀ (1 for a mean loss)."""
        return 1.0 if self.fn.reduction == "mean" else float(self.fn.num_examples)

    def exact_trace(self) -> float | None:
        """Tr K = c (Σ_i ‖g_i‖² − N ‖ḡ‖²), from per-example gradients (None in train mode)."""
        fn = self.fn
        if self.centered is not None:
            return float(fn.scaled(self.centered.pow(2).sum()))
        if fn.train:
            return None
        sq = sum(float(self._chunk_gradients(i).pow(2).sum()) for i in range(len(fn.batches)))
        return fn.scaled(sq) - self.mean_weight * float(self.mean_gradient @ self.mean_gradient)
