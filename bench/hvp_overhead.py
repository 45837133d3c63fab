"""What a Hessian-vector product costs inside ``hessian_eigs`` against a standalone double
backward product, at small and large batches (issue 11, item 4).

Model: MLP 784-128-128-10 (118,282 parameters) after 200 SGD steps (batch 128, lr 0.05) on
standardized Fashion-MNIST; the mean cross-entropy on n fixed training examples, eval mode.
Per repeat, interleaved: the standalone product (one retained graph, ``autograd.grad`` of
the gradient against a vector, timed over 10 products), the operator's construction alone
(``HessianOperator``: graph size probe and graph build), and ``hessian_eigs`` (k, tol
1e-4; its ``seconds`` include building the operator). Reported, medians over repeats:

    total    = hessian_eigs seconds / products / standalone product
    no build = (hessian_eigs seconds − construction) / products / standalone product
    floor    = the bare three-term Lanczos recurrence per product / standalone product

(PyHessian builds the same graph once, so "no build" is the per-product overhead of the
algorithm, "total" what a user sees.) The floor is what any Lanczos method pays at least:
the same number of products, each followed only by α = qᵀAq, w = Aq − αq − βq_prev,
β = ‖w‖, q ← w/β on flat float32 vectors (A q copied into a flat row, as every method on
flat vectors must), no reorthogonalization and no convergence test. One torch thread.
Never asserted in tests.

    python bench/hvp_overhead.py --data ../shared/datasets/fashion_mnist.npz --n 256 1024 4096
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curvature import sgd  # noqa: E402  (the benchmarks' training loop)

from sgdlab.curvature import HessianOperator, hessian_eigs  # noqa: E402


def load(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as d:
        x = torch.tensor(d["x_train"][:n], dtype=torch.float32).reshape(-1, 784) / 255.0
        y = torch.tensor(d["y_train"][:n], dtype=torch.long)
    return (x - x.mean()) / x.std(), y


def retained_gradient(model: nn.Module, x, y) -> tuple[list[torch.Tensor], tuple]:
    """The parameters and ∇L with its graph kept (what both reference loops differentiate)."""
    params = list(model.parameters())
    return params, torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)


def standalone(model: nn.Module, x, y, reps: int = 10) -> float:
    params, g = retained_gradient(model, x, y)
    vs = [torch.randn_like(p) for p in params]
    torch.autograd.grad(g, params, vs, retain_graph=True)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.autograd.grad(g, params, vs, retain_graph=True)
    return (time.perf_counter() - t0) / reps


def three_term(model: nn.Module, x, y, products: int) -> float:
    """Seconds per product of the bare three-term recurrence (module docstring)."""
    params, g = retained_gradient(model, x, y)
    sizes = [p.numel() for p in params]
    V = torch.empty(products + 1, sum(sizes))
    AV = torch.empty(products, sum(sizes))
    V[0] = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0))
    V[0] /= V[0].norm()
    beta = 0.0
    t0 = time.perf_counter()
    for j in range(products):
        vs = [a.view_as(p) for a, p in zip(V[j].split(sizes), params)]
        hv = torch.autograd.grad(g, params, vs, retain_graph=True)
        for a, b in zip(AV[j].split(sizes), hv):
            a.copy_(b.reshape(-1))
        alpha = float(V[j] @ AV[j])
        w = torch.add(AV[j], V[j], alpha=-alpha)
        if j:
            w.add_(V[j - 1], alpha=-beta)
        beta = float(w.norm())
        torch.div(w, beta, out=V[j + 1])
    return (time.perf_counter() - t0) / products


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--n", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--k", type=int, nargs="+", default=[1, 5])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x_all, y_all = load(args.data, 20000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                              nn.Linear(128, 10))
    gen = torch.Generator().manual_seed(0)
    sgd(model, x_all, y_all, 200, gen)  # bench/curvature.py's loop: batch 128, lr 0.05
    perm = torch.randperm(len(y_all), generator=gen)
    rows = []
    for n in args.n:
        x, y = x_all[perm[:n]], y_all[perm[:n]]
        hessian_eigs(model, F.cross_entropy, (x, y), k=1, max_products=3)  # warm-up
        for k in args.k:
            reps = []
            for _ in range(args.repeat):
                hvp = standalone(model, x, y)
                t0 = time.perf_counter()
                HessianOperator(model, F.cross_entropy, (x, y))
                build = time.perf_counter() - t0
                res = hessian_eigs(model, F.cross_entropy, (x, y), k=k, tol=1e-4)
                floor = three_term(model, x, y, res.products)
                reps.append(dict(hvp=hvp, build=build, seconds=res.seconds,
                                 products=res.products,
                                 total=res.seconds / res.products / hvp,
                                 no_build=(res.seconds - build) / res.products / hvp,
                                 floor=floor / hvp))
            row = dict(n=n, k=k, products=reps[-1]["products"],
                       hvp_ms=1e3 * statistics.median(r["hvp"] for r in reps),
                       build_ms=1e3 * statistics.median(r["build"] for r in reps),
                       total=statistics.median(r["total"] for r in reps),
                       no_build=statistics.median(r["no_build"] for r in reps),
                       floor=statistics.median(r["floor"] for r in reps), repeats=reps)
            rows.append(row)
            print(f"n={n} k={k}: {row['products']} products, standalone {row['hvp_ms']:.2f} ms, "
                  f"build {row['build_ms']:.1f} ms, total {row['total']:.2f}x, "
                  f"no build {row['no_build']:.2f}x, floor {row['floor']:.2f}x", flush=True)
    print(f"\ncpu ({torch.get_num_threads()} thread(s), {platform.node()}), torch "
          f"{torch.__version__}\n")
    print("| n | k | products | standalone product ms | construction ms | per product in "
          "hessian_eigs, total | without construction | three-term floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['k']} | {r['products']} | {r['hvp_ms']:.2f} | "
              f"{r['build_ms']:.1f} | {r['total']:.2f}x | {r['no_build']:.2f}x | "
              f"{r['floor']:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
