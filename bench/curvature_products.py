"""Hessian-vector products that sgdlab's Lanczos spends on the benchmark CNN (no PyHessian).

The setting of ``bench/curvature.py`` (its model, training and data: CNN width ``--width``
trained ``--steps`` SGD steps on Fashion-MNIST, eval mode, mean cross-entropy on ``--n`` fixed
training examples), reduced to what the algorithm decides: how many products
``hessian_eigs`` uses for top-k at each tolerance and seed, and the eigenvalues it returns
against a float64 reference. Product counts are deterministic for a given torch build and
thread count, so two versions of the algorithm are compared by running this script on each::

    python bench/curvature_products.py --threads 1 --out before.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curvature import DATA, cnn, load, sgd  # noqa: E402  (the benchmark's own setting)

from sgdlab.curvature import hessian_eigs  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--k", type=int, nargs="+", default=[1, 5])
    p.add_argument("--tols", type=float, nargs="+", default=[1e-3, 1e-4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--which", nargs="+", default=["LA"])
    p.add_argument("--block-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = load(args.data, torch.device("cpu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cnn(args.width)
    sgd(model, x, y, args.steps, torch.Generator().manual_seed(0))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))[: args.n]
    data = (x[perm], y[perm])
    rows = []
    for which in args.which:
        ref = hessian_eigs(
            model, F.cross_entropy, data, k=max(args.k), which=which, tol=1e-6,
            dtype=torch.float64, max_products=2000,
        )
        ref_vals = ref.values.numpy()
        print(f"reference {which}: {ref_vals.tolist()} ({ref.products} products)", flush=True)
        for b, k, tol, seed in itertools.product(args.block_sizes, args.k, args.tols, args.seeds):
            t0 = time.perf_counter()
            res = hessian_eigs(model, F.cross_entropy, data, k=k, which=which, tol=tol,
                               seed=seed, block_size=b)
            err = np.abs(res.values.numpy() - ref_vals[:k]) / np.abs(ref_vals[:k])
            row = dict(which=which, block_size=b, k=k, tol=tol, seed=seed,
                       products=res.products, converged=res.all_converged,
                       max_rel_err=float(err.max()), seconds=time.perf_counter() - t0)
            rows.append(row)
            print(row, flush=True)
    print("\n| which | block | k | tol | products per seed | max rel err |")
    print("|---|---:|---:|---:|---|---:|")
    for which, b, k, tol in itertools.product(args.which, args.block_sizes, args.k, args.tols):
        key = (which, b, k, tol)
        sel = [r for r in rows if (r["which"], r["block_size"], r["k"], r["tol"]) == key]
        prods = ", ".join(str(r["products"]) for r in sel)
        err = max(r["max_rel_err"] for r in sel)
        print(f"| {which} | {b} | {k} | {tol:g} | {prods} | {err:.1e} |")
    out = dict(config={k: str(v) for k, v in vars(args).items()}, rows=rows,
               torch=torch.__version__)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
