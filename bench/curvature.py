"""Benchmark: sgdlab.curvature beside PyHessian 0.1 on a small CNN trained on Fashion-MNIST.

Model: conv3x3(1→w, pad 1)-ReLU-maxpool2 → conv3x3(w→2w, pad 1)-ReLU-maxpool2 → fc(49·2w → 4w)-ReLU
→ fc(4w → 10); w = ``--width`` (default 32: 421,642 parameters). Trained for ``--steps`` plain SGD
steps (batch 128, lr 0.05) from a seeded init on the standardized training set, then, in eval
mode, the Hessian of the mean cross-entropy on n fixed training examples (a seeded permutation:
the file is sorted by class) is probed by both tools, in one process:

* top-1 and top-5 eigenvalues: seconds (setup included), Hessian-vector products, and the
  largest relative error against a tight reference (our Lanczos, residual ≤ 1e-6, float64 by
  default);
* the trace with its standard error (PyHessian reports none: we compute it from its samples),
  against a long Hutch++ run, and Hutchinson at the same product budget as our Hutch++;
* tracking: checkpoints ``--track-every`` SGD steps apart, top-5 at tol 1e-4 cold versus
  warm-started from the previous checkpoint's vectors.

Prints a markdown table; ``--out`` writes everything as JSON. Needs ``pip install pyhessian==0.1
--no-deps`` (a bench-only extra). Small CPU scale::

    python bench/curvature.py --n 1024 --width 16 --device cpu --threads 1 \
        --ref-trace-products 300 --trace-products 400 --trace-reps 0

Full scale on a GPU: ``python bench/curvature.py --device cuda --out bench/out/curvature.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.curvature import hessian_eigs, hessian_trace

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fashion_mnist.npz"


def cnn(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 49, 4 * width),
        nn.ReLU(),
        nn.Linear(4 * width, 10),
    )


def load(path: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as d:
        x = torch.tensor(d["x_train"], dtype=torch.float32) / 255.0
        y = torch.tensor(d["y_train"], dtype=torch.long)
    x = ((x - x.mean()) / x.std()).unsqueeze(1)
    return x.to(device), y.to(device)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sgd(model: nn.Module, x, y, steps: int, gen: torch.Generator, lr: float = 0.05) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=gen).to(x.device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


class PyHessianCounter:
    """Counts PyHessian's HVPs by wrapping ``pyhessian.hessian.hessian_vector_product``."""

    def __init__(self) -> None:
        # the package re-exports the class ``hessian`` under the module's name: fetch the module
        ph = importlib.import_module("pyhessian.hessian")
        self.ph, self.count = ph, 0
        orig = getattr(ph, "_sgdlab_original_hvp", ph.hessian_vector_product)
        ph._sgdlab_original_hvp = orig

        def counted(gradsH, params, v):
            self.count += 1
            return orig(gradsH, params, v)

        ph.hessian_vector_product = counted

    def run(self, model, x, y, device, task: str, seed: int):
        """(seconds, hvps, output) of one PyHessian call, setup included."""
        torch.manual_seed(seed)  # PyHessian draws from the global RNG (bench only)
        self.count = 0
        sync(device)
        t0 = time.perf_counter()
        h = self.ph.hessian(model, F.cross_entropy, data=(x, y), cuda=device.type == "cuda")
        if task == "top1":
            out = h.eigenvalues(top_n=1, maxIter=100, tol=1e-3)[0]
        elif task == "top5":
            out = h.eigenvalues(top_n=5, maxIter=100, tol=1e-3)[0]
        else:
            out = h.trace(maxIter=100, tol=1e-3)
        sync(device)
        seconds = time.perf_counter() - t0
        del h
        for p in model.parameters():  # PyHessian leaves a create_graph gradient in .grad
            p.grad = None
        return seconds, self.count, out


def max_rel(values, ref) -> float:
    vals = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    ref = np.asarray(ref, dtype=np.float64)[: len(vals)]
    return float(np.max(np.abs(vals - ref) / np.abs(ref)))


def bench_n(model, xs, ys, args, device) -> dict:
    loss = F.cross_entropy
    data = (xs, ys)
    ref_dtype = getattr(torch, args.ref_dtype)
    # warm-up (CUDA context, cuDNN choices) for both tools, untimed
    hessian_eigs(model, loss, data, k=1, max_products=3)
    counter = PyHessianCounter()
    counter.ph.hessian(model, loss, data=data, cuda=device.type == "cuda").eigenvalues(maxIter=2)
    for p in model.parameters():
        p.grad = None

    t0 = time.perf_counter()
    ref = hessian_eigs(model, loss, data, k=5, tol=args.ref_tol, dtype=ref_dtype, max_products=2000)
    ref_seconds = time.perf_counter() - t0
    log(
        f"n={len(ys)} reference eigenvalues {ref.values.tolist()} "
        f"({ref.products} HVPs, {ref_seconds:.1f} s)"
    )
    ref_vals = ref.values.numpy()
    t0 = time.perf_counter()
    ref_tr = hessian_trace(
        model, loss, data, rtol=0, max_products=args.ref_trace_products, seed=12345
    )
    ref_tr_seconds = time.perf_counter() - t0
    rows = []

    def row(tool, task, seconds, hvps, top1=None, top5=None, tr=None, se=None, note=""):
        r = dict(
            tool=tool,
            task=task,
            seconds=seconds,
            hvps=hvps,
            top1_rel_err=top1,
            top5_rel_err=top5,
            trace=tr,
            trace_se=se,
            note=note,
        )
        if tr is not None:
            r["trace_rel_err"] = abs(tr - ref_tr.estimate) / abs(ref_tr.estimate)
        rows.append(r)
        log(f"n={len(ys)} {tool} {task}: {seconds:.2f} s, {hvps} HVPs {note}")

    for task, k in (("top1", 1), ("top5", 5)):
        s, c, vals = counter.run(model, xs, ys, device, task, args.seed)
        vals = [float(v) for v in vals]
        row(
            "pyhessian",
            task,
            s,
            c,
            top1=max_rel(vals[:1], ref_vals),
            top5=max_rel(vals, ref_vals) if k == 5 else None,
            note="power iteration, tol 1e-3",
        )
        for tol in args.tols:
            res = hessian_eigs(model, loss, data, k=k, tol=tol, seed=args.seed)
            v = res.values.numpy()
            row(
                "sgdlab",
                task,
                res.seconds,
                res.products,
                top1=max_rel(v[:1], ref_vals),
                top5=max_rel(v, ref_vals) if k == 5 else None,
                note=f"lanczos, tol {tol:g}, max residual {res.residuals.max():.1e}",
            )
    s, c, samples = counter.run(model, xs, ys, device, "trace", args.seed)
    samples = np.asarray(samples, dtype=np.float64)
    se = float(samples.std(ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    row("pyhessian", "trace", s, c, tr=float(samples.mean()), se=se, note="hutchinson, tol 1e-3")
    pp = hessian_trace(
        model, loss, data, rtol=args.trace_rtol, max_products=args.trace_products, seed=args.seed
    )
    row(
        "sgdlab",
        "trace",
        pp.seconds,
        pp.products,
        tr=pp.estimate,
        se=pp.stderr,
        note=f"hutch++ rtol {args.trace_rtol:g} (sketch {pp.sketch_size})",
    )
    hu = hessian_trace(
        model, loss, data, rtol=0, max_products=pp.products, method="hutchinson", seed=args.seed
    )
    row(
        "sgdlab",
        "trace",
        hu.seconds,
        hu.products,
        tr=hu.estimate,
        se=hu.stderr,
        note="hutchinson, same budget as hutch++",
    )
    reps = {}
    for method in ("hutch++", "hutchinson"):  # repeated at the same budget: RMS errors
        ests = [
            hessian_trace(
                model, loss, data, rtol=0, max_products=pp.products, method=method, seed=1000 + r
            ).estimate
            for r in range(args.trace_reps)
        ]
        err = np.array(ests) - ref_tr.estimate
        reps[method] = dict(
            estimates=ests, rms_rel_err=float(np.sqrt(np.mean(err**2))) / ref_tr.estimate
        )
        if args.trace_reps:
            log(
                f"n={len(ys)} {method} x{args.trace_reps}: "
                f"rms rel err {reps[method]['rms_rel_err']:.4f}"
            )
    return dict(
        n=len(ys),
        rows=rows,
        trace_repeats=dict(products=pp.products, **reps) if args.trace_reps else None,
        reference=dict(
            values=ref_vals.tolist(),
            residuals=ref.residuals.tolist(),
            products=ref.products,
            seconds=ref_seconds,
            dtype=args.ref_dtype,
            tol=args.ref_tol,
            trace=ref_tr.estimate,
            trace_se=ref_tr.stderr,
            trace_products=ref_tr.products,
            trace_seconds=ref_tr_seconds,
        ),
    )


def tracking(model, x, y, xs, ys, args, gen) -> list[dict]:
    """Top-5 at each checkpoint: cold versus warm from the previous checkpoint's vectors."""
    out, prev = [], None
    for c in range(args.track + 1):
        if c:
            sgd(model, x, y, args.track_every, gen)
        cold = hessian_eigs(model, F.cross_entropy, (xs, ys), k=5, tol=1e-4, seed=args.seed)
        rec = dict(
            checkpoint=c,
            step=args.steps + c * args.track_every,
            cold_products=cold.products,
            cold_seconds=cold.seconds,
            values=cold.values.tolist(),
        )
        if prev is not None:
            warm = hessian_eigs(
                model, F.cross_entropy, (xs, ys), k=5, tol=1e-4, init=prev, seed=args.seed
            )
            block = hessian_eigs(
                model,
                F.cross_entropy,
                (xs, ys),
                k=5,
                tol=1e-4,
                init=prev,
                block_size=5,
                seed=args.seed,
            )
            overlap = (prev.vectors @ cold.vectors.T).abs().max(dim=1).values
            rec.update(
                warm_products=warm.products,
                warm_seconds=warm.seconds,
                warm_block_products=block.products,
                warm_block_seconds=block.seconds,
                warm_over_cold=warm.products / cold.products,
                warm_max_value_diff=float(((warm.values - cold.values).abs() / cold.values).max()),
                overlap_with_previous=overlap.cpu().tolist(),
            )
            prev = warm
        else:
            prev = cold
        out.append(rec)
        log(f"tracking {rec}")
    return out


def summary(rows: list[dict]) -> None:
    """One line per goal: our time over PyHessian's, and errors."""
    ph = {q["task"]: q for q in rows if q["tool"] == "pyhessian"}
    for task, err in (("top1", "top1_rel_err"), ("top5", "top5_rel_err")):
        for q in rows:
            if q["tool"] == "sgdlab" and q["task"] == task:
                print(
                    f"- {task}: sgdlab {q['note'].split(',')[1].strip()}: "
                    f"{q['seconds'] / ph[task]['seconds']:.2f}x PyHessian's time, "
                    f"{q['hvps'] / ph[task]['hvps']:.2f}x its HVPs, error {q[err]:.1e} "
                    f"(PyHessian {ph[task][err]:.1e})"
                )
    tr = [q for q in rows if q["tool"] == "sgdlab" and q["task"] == "trace"]
    if len(tr) == 2:
        print(
            f"- trace at {tr[0]['hvps']} HVPs: hutch++ error {tr[0]['trace_rel_err']:.3f} "
            f"(SE {tr[0]['trace_se'] / abs(tr[0]['trace']):.3f}), hutchinson error "
            f"{tr[1]['trace_rel_err']:.3f} (SE {tr[1]['trace_se'] / abs(tr[1]['trace']):.3f})"
        )
    print()


def fmt(v, spec=".2e"):
    return "" if v is None else format(v, spec)


def table_row(cells) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[2048, 8192], help="Hessian sample sizes")
    p.add_argument("--width", type=int, default=32, help="conv1 channels (conv2 = 2w, fc = 4w)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=500, help="SGD steps before probing")
    p.add_argument(
        "--tols", type=float, nargs="+", default=[1e-3, 1e-4], help="our Lanczos tolerances"
    )
    p.add_argument("--ref-tol", type=float, default=1e-6)
    p.add_argument("--ref-dtype", default="float64", choices=["float64", "float32"])
    p.add_argument(
        "--ref-trace-products", type=int, default=3000, help="reference Hutch++ products"
    )
    p.add_argument("--trace-rtol", type=float, default=1e-2)
    p.add_argument("--trace-products", type=int, default=1000)
    p.add_argument(
        "--trace-reps",
        type=int,
        default=10,
        help="repeat hutch++ and hutchinson at equal budget (RMS error; 0: skip)",
    )
    p.add_argument("--track", type=int, default=3, help="checkpoints after the first")
    p.add_argument("--track-every", type=int, default=50, help="SGD steps between checkpoints")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, y = load(args.data, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = cnn(args.width)
    model.to(device)
    nparams = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    sgd(model, x, y, args.steps, gen)
    sync(device)
    train_seconds = time.perf_counter() - t0
    log(f"trained {args.steps} steps in {train_seconds:.1f} s")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed + 1)).to(device)
    results = []
    for n in args.n:
        idx = perm[:n]
        results.append(bench_n(model, x[idx], y[idx], args, device))
    idx = perm[: args.n[0]]
    track = tracking(model, x, y, x[idx], y[idx], args, gen) if args.track else []
    env = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        device=str(device),
        device_name=torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor(),
        threads=torch.get_num_threads(),
        # PyHessian runs under torch's defaults; sgdlab's products turn TF32 off on CUDA
        cudnn_tf32_default=torch.backends.cudnn.allow_tf32,
    )
    report = dict(
        config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        params=nparams,
        train_seconds=train_seconds,
        env=env,
        results=results,
        tracking=track,
    )

    print(
        f"\n# Curvature bench: CNN width {args.width} ({nparams:,} parameters), {device}, "
        f"{args.steps} SGD steps ({train_seconds:.1f} s)\n"
    )
    for r in results:
        ref = r["reference"]
        print(
            f"## n = {r['n']}: reference top-5 {np.round(ref['values'], 4).tolist()} "
            f"({ref['dtype']}, max residual {max(ref['residuals']):.1e}, {ref['products']} HVPs), "
            f"trace {ref['trace']:.2f} ± {ref['trace_se']:.2f} ({ref['trace_products']} HVPs)\n"
        )
        head = ["tool", "task", "seconds", "HVPs", "top-1 rel err", "top-5 rel err"]
        table_row(head + ["trace ± SE", "trace rel err", "note"])
        table_row(["---"] * 2 + ["---:"] * 6 + ["---"])
        for q in r["rows"]:
            tr = "" if q["trace"] is None else f"{q['trace']:.2f} ± {q['trace_se']:.2f}"
            table_row(
                [
                    q["tool"],
                    q["task"],
                    f"{q['seconds']:.3f}",
                    q["hvps"],
                    fmt(q["top1_rel_err"]),
                    fmt(q["top5_rel_err"]),
                    tr,
                    fmt(q.get("trace_rel_err"), ".3f"),
                    q["note"],
                ]
            )
        print()
        summary(r["rows"])
        rep = r["trace_repeats"]
        if rep:
            print(
                f"- trace, {len(rep['hutch++']['estimates'])} repeats at {rep['products']} HVPs: "
                f"RMS relative error hutch++ {rep['hutch++']['rms_rel_err']:.4f}, "
                f"hutchinson {rep['hutchinson']['rms_rel_err']:.4f} "
                f"(reference SE {ref['trace_se'] / abs(ref['trace']):.4f})\n"
            )
    if track:
        print(
            f"## Tracking (n = {args.n[0]}, top-5 at tol 1e-4, "
            f"checkpoints {args.track_every} SGD steps apart)\n"
        )
        table_row(
            [
                "checkpoint",
                "step",
                "cold HVPs (s)",
                "warm HVPs (s)",
                "warm/cold HVPs",
                "warm block-5 HVPs (s)",
                "min overlap with previous vectors",
            ]
        )
        table_row(["---:"] * 7)
        for t in track:
            w = "warm_products" in t
            table_row(
                [
                    t["checkpoint"],
                    t["step"],
                    f"{t['cold_products']} ({t['cold_seconds']:.2f})",
                    f"{t['warm_products']} ({t['warm_seconds']:.2f})" if w else "",
                    fmt(t.get("warm_over_cold"), ".2f"),
                    f"{t['warm_block_products']} ({t['warm_block_seconds']:.2f})" if w else "",
                    fmt(min(t["overlap_with_previous"]), ".3f") if w else "",
                ]
            )
        print()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
