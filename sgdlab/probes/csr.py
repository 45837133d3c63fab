"""Critical sample ratio (Arpit et al., ICML 2017, "A Closer Look at Memorization in Deep
Networks", Section 4.1 and Algorithm 1).

A point ``x`` with predicted class ``k = argmax f(x)`` is *critical* when its L-infinity box
``B(x, r) = {x' : |x'_i - x_i| <= r_i}`` holds a point ``x_hat`` with ``argmax f(x_hat) != k``.
It is searched by Langevin adversarial sample search (LASS, Algorithm 1): from ``x~ = x``,
at most ``max_iter`` times

    x~ <- x~ + alpha * sign(grad_x~ l(f(x~), k)) + beta * eta,     eta ~ N(0, I)
    x~ <- x + clip(x~ - x, -r, r)                  (line 7: back onto the faces of the box)
    if argmax f(x~) != k: x is critical, x_hat = x~, stop.

``l`` is the cross-entropy of the outputs against the predicted class ``k`` (also for models
trained with MSE: only the argmax matters), so the sign step is FGSM *away* from ``k``: the
paper writes ``sign(d f_k / d x)``; the step must lower the score of ``k``, as in the
authors' convention for adversarial samples (Kurakin et al. 2016, predicted label, not the
true one). The gradient is taken at the current iterate ``x~``.
``CSR = #critical / N``.

Defaults. The values the authors used are those of their LASS code (Arpit's, as released with
Ma et al., ICLR 2018, "Characterizing adversarial subspaces using local intrinsic
dimensionality", which reuses it for the CSR): ``a = 0.25/255``, ``b = 0.2/255``,
``r = 0.3/255`` "for elements of X in [0, 1]; otherwise scale accordingly", and at most 100
iterations; i.e. alpha = 0.25, beta = 0.2, r = 0.3 grey levels of a 0-255 image. The paper
states the search as Algorithm 1 with these symbols. Here they are in [0, 1] pixel units and
multiplied elementwise by ``scale`` = d(normalized input) / d(pixel input)
(``DataBundle.input_scale``), so that the box is the same set of images whatever the
normalization. (That code also stops a whole batch once an iteration finds fewer than 20
new critical samples; here every example is searched for all ``max_iter`` iterations, which
finds at least as many.) Measured with these defaults on 1,000 MNIST test images (2,000
training images, MLP 784-512-512-10 trained to 99.9% training accuracy, standardized
inputs): CSR 0.05 with real labels, 0.58 with random labels; on the digits test set (MLP
64-256-256-10 fitted to 100%): 0.003 and 0.21.

Everything is batched: one forward-backward per iteration for all examples still searching
(the forward at the new iterate gives both the class check and the next gradient). Only
input gradients are computed (``torch.autograd.grad``), in eval mode (modes restored), with
the noise drawn from the caller's generator: parameters, their ``.grad``, buffers and the
global RNG are untouched.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdlab.errors import ConfigError
from sgdlab.evaluation import eval_mode
from sgdlab.probes.base import OptionError, Probe, ProbeContext, Schedule, check_int, check_number

PIXEL = 1 / 255


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """A generator on ``device``: ``generator`` itself if it lives there, else a new one seeded
    by one draw from it (seed 0 when ``generator`` is None)."""
    device = torch.device(device)
    if generator is not None and generator.device == device:
        return generator
    seed = 0 if generator is None else int(
        torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


class LassResult(NamedTuple):
    critical: Tensor  # (N,) bool: an adversarial sample was found in the box
    iterations: Tensor  # (N,) int64: iteration (1-based) where the class changed, 0 if never
    x_adv: Tensor  # (N, ...) the adversarial sample (critical) or the last iterate


def lass(
    model: nn.Module,
    x: Tensor,
    *,
    radius: float | Tensor = 0.3 * PIXEL,
    alpha: float | Tensor = 0.25 * PIXEL,
    beta: float | Tensor = 0.2 * PIXEL,
    max_iter: int = 100,
    scale: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 500,
) -> LassResult:
    """Langevin adversarial sample search from every row of ``x`` (Algorithm 1).

    ``radius``, ``alpha``, ``beta`` are in pixel units and multiplied by ``scale`` (shape of
    one example, or anything broadcastable; None = 1). ``batch_size`` examples are searched
    at once, each stopping as soon as its class changes.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    like = {"device": x.device, "dtype": x.dtype}
    s = torch.ones((), **like) if scale is None else scale.to(**like)
    r, a, b = (torch.as_tensor(v, **like) * s for v in (radius, alpha, beta))
    gen = device_generator(generator, x.device)
    critical = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    x_adv = x.detach().clone()
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            x0 = x_adv[start:start + batch_size].clone()
            xt, k = x0, None
            active = torch.arange(len(x0), device=x.device)  # rows (in the chunk) still searching
            for it in range(max_iter + 1):
                xt = xt.detach().requires_grad_(True)
                with torch.enable_grad():
                    out = model(xt)
                pred = out.detach().argmax(dim=-1)
                if k is None:  # it == 0: the prediction to move away from
                    k, keep = pred, torch.ones_like(pred, dtype=torch.bool)
                else:
                    rows = start + active
                    changed = pred != k[active]
                    x_adv[rows] = xt.detach()
                    critical[rows[changed]] = True
                    iterations[rows[changed]] = it
                    if it == max_iter or bool(changed.all()):
                        break
                    keep = ~changed
                with torch.enable_grad():
                    loss = F.cross_entropy(out[keep], k[active[keep]], reduction="sum")
                    (grad,) = torch.autograd.grad(loss, xt)
                active = active[keep]
                base = x0[active]
                noise = torch.randn(base.shape, generator=gen, **like)
                step = xt.detach()[keep] + a * grad[keep].sign() + b * noise
                xt = torch.minimum(torch.maximum(step, base - r), base + r)
    return LassResult(critical, iterations, x_adv)


def critical_sample_ratio(model: nn.Module, x: Tensor, **options) -> float:
    """Fraction of the rows of ``x`` found critical by :func:`lass` (same options)."""
    return lass(model, x, **options).critical.double().mean().item()


class CriticalSampleRatio(Probe):
    """CSR on a fixed subset of ``n`` examples of ``split`` (default the test set).

    Returns ``csr`` and ``mean_iter`` (mean LASS iterations of the critical samples, NaN if
    none). Radii in [0, 1] pixel units, scaled by ``ctx.data.input_scale``.
    """

    name = "csr"

    def __init__(self, schedule: Schedule | None = None, *, n: int = 1000, split: str = "test",
                 radius: float = 0.3 * PIXEL, alpha: float = 0.25 * PIXEL,
                 beta: float = 0.2 * PIXEL, max_iter: int = 100, batch_size: int = 500) -> None:
        super().__init__(schedule)
        if split not in ("train", "test"):
            raise OptionError(self.name, "split", split, "'train' or 'test'")
        for key, value in (("n", n), ("max_iter", max_iter), ("batch_size", batch_size)):
            check_int(self.name, key, value)
        for key, value in (("radius", radius), ("alpha", alpha), ("beta", beta)):
            check_number(self.name, key, value, lambda v: v >= 0, "a number >= 0")
        self.n, self.split, self.max_iter, self.batch_size = n, split, max_iter, batch_size
        self.radius, self.alpha, self.beta = float(radius), float(alpha), float(beta)

    def check(self, model: nn.Module, data) -> None:
        if data.task != "classification":
            raise ConfigError(f"probe csr needs a classification task; {data.name} is "
                              f"{data.task}")

    def measure(self, ctx: ProbeContext) -> dict:
        x, _ = ctx.subset(self.n, self.split)
        res = lass(ctx.model, x, radius=self.radius, alpha=self.alpha, beta=self.beta,
                   max_iter=self.max_iter, scale=ctx.data.input_scale,
                   generator=ctx.generator, batch_size=self.batch_size)
        crit = res.critical
        mean_iter = res.iterations[crit].double().mean().item() if crit.any() else float("nan")
        return {"csr": crit.double().mean().item(), "mean_iter": mean_iter}
