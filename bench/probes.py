"""Overhead of measuring the trajectory: a run on Fashion-MNIST trained without probes and
with lambda_max (top-1 Hessian eigenvalue on a fixed probe subset of 2,048 examples) every
epoch, in one process, interleaved and repeated; prints the wall times and their ratios.

    python bench/probes.py --data ../shared/datasets/fashion_mnist.npz            # the issue's run
    python bench/probes.py --data ../shared/datasets/fashion_mnist.npz --model cnn
    python bench/probes.py --data ... --variants tol=1e-3 tol=1e-2 warm_start=false
    python bench/probes.py --data ... --tracking 469 50    # warm against cold along SGD

The default model is sgdlab's MLP (784-256-256-10, 269,322 parameters); 60,000 examples,
3 epochs of batch 128 (1,407 steps), lr 0.05, evaluation at the start and the end only.
Each ``--variants`` entry is a set of ``hessian`` probe options (``k=1,tol=1e-2``); every
repeat trains the run without probes, then once per variant, then a plain PyTorch loop over
the same tensors (the floor any trainer pays). Timings are never asserted in tests.

``--tracking EVERY...`` instead trains the same model with plain SGD at the run's learning
rate and, every EVERY steps, measures lambda_max on the probe's subset cold (random start)
and warm (from the previous measurement's vector) at tol 1e-3 and 1e-2, against a tight
reference (tol 1e-7): Hessian-vector products, the overlap of consecutive top vectors, and
the error of each value with its bound (a Rayleigh quotient θ ≤ λ_max, an eigenvalue within
the residual ‖Hv − θv‖ of θ).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from sgdlab.config import load_config
from sgdlab.curvature import hessian_eigs
from sgdlab.data import iterate_batches, load_data
from sgdlab.models import build_model
from sgdlab.store import Store
from sgdlab.train import make_loss, train


def config(args, probes: list[dict]):
    return load_config(None, {
        "name": "bench", "device": args.device,
        "data": {"name": "fashion-mnist", "file": args.data, "n_train": args.n_train,
                 "download": False},
        "model": {"name": args.model},
        "optim": {"lr": args.lr, "batch_size": 128},
        "train": {"epochs": args.epochs, "eval_every": 10**9, "checkpoint_every": 10**9},
        "probes": probes,
    })


def plain_setup(cfg):
    """(device, data, model, SGD optimizer, loss) of a hand-written loop for ``cfg``."""
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available()
                          else "cpu")
    data = load_data(cfg.data, cfg.seed, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr)
    return device, data, model, opt, make_loss("cross_entropy")


def plain_loop(cfg) -> float:
    """The same training in a hand-written PyTorch loop (no evaluation, no logging)."""
    device, data, model, opt, loss_fn = plain_setup(cfg)
    sync(device)
    t0 = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        for idx in iterate_batches(data.n_train, cfg.optim.batch_size, cfg.seed, epoch, device):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    sync(device)
    return time.perf_counter() - t0


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_run(cfg, root: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    run = train(cfg, Store(root), progress=False)
    return time.perf_counter() - t0, run.id


def tracking(args, every: int) -> list[dict]:
    """lambda_max every ``every`` SGD steps: cold and warm at tol 1e-3 and 1e-2."""
    cfg = config(args, [])
    device, data, model, opt, loss_fn = plain_setup(cfg)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 17)  # as ProbeContext.subset
    sub = torch.randperm(data.n_train, generator=g)[: args.probe_n].to(device)
    probe = (data.x_train[sub], data.y_train[sub])
    previous: dict[float, object] = {}
    out, step = [], 0
    for epoch in range(cfg.train.epochs):
        for idx in iterate_batches(data.n_train, cfg.optim.batch_size, cfg.seed, epoch, device):
            if step % every == 0:
                out.append(measure_point(model, loss_fn, probe, previous, step))
            opt.zero_grad(set_to_none=True)
            loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
            step += 1
    out.append(measure_point(model, loss_fn, probe, previous, step))
    return out


def measure_point(model, loss_fn, probe, previous: dict, step: int) -> dict:
    model.eval()
    ref = hessian_eigs(model, loss_fn, probe, k=1, tol=1e-7, seed=1, dtype=torch.float64)
    lam = float(ref.values[0])
    rec: dict = {"step": step, "lambda_max": lam, "reference_products": ref.products}
    for tol in (1e-3, 1e-2):
        cold = hessian_eigs(model, loss_fn, probe, k=1, tol=tol, seed=0)
        rec[f"cold_{tol:g}"] = point(cold, lam)
        if tol in previous:
            warm = hessian_eigs(model, loss_fn, probe, k=1, tol=tol, init=previous[tol], seed=0)
            rec[f"warm_{tol:g}"] = point(warm, lam)
            rec[f"overlap_{tol:g}"] = float(
                (previous[tol].vectors[0].double() @ ref.vectors[0]).abs())
            previous[tol] = warm
        else:
            previous[tol] = cold
    model.train()
    log_point(rec)
    return rec


def point(res, lam: float) -> dict:
    theta, r = float(res.values[0]), float(res.residuals[0]) * abs(float(res.values[0]))
    return {"products": res.products, "seconds": res.seconds, "value": theta,
            "rel_error": (lam - theta) / lam, "bound": r / lam,
            "in_bound": bool(theta - r <= lam <= theta + r)}


def log_point(rec: dict) -> None:
    parts = [f"step {rec['step']}: lambda_max {rec['lambda_max']:.4f}"]
    for key in ("cold_0.001", "warm_0.001", "cold_0.01", "warm_0.01"):
        if key in rec:
            q = rec[key]
            parts.append(f"{key} {q['products']} HVPs err {q['rel_error']:.1e} "
                         f"(bound {q['bound']:.1e})")
    if "overlap_0.001" in rec:
        parts.append(f"overlap {rec['overlap_0.001']:.3f}")
    print("; ".join(parts), flush=True)


def tracking_table(every: int, recs: list[dict]) -> None:
    print(f"\n## lambda_max every {every} SGD steps\n")
    print("| step | lambda_max | overlap with previous vector | cold HVPs (1e-3) | "
          "warm HVPs (1e-3) | cold HVPs (1e-2) | warm HVPs (1e-2) | error at 1e-2 (bound) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in recs:
        w3, w2 = r.get("warm_0.001"), r.get("warm_0.01")
        q = w2 or r["cold_0.01"]
        print(f"| {r['step']} | {r['lambda_max']:.4f} | "
              f"{r.get('overlap_0.001', float('nan')):.3f} | {r['cold_0.001']['products']} | "
              f"{w3['products'] if w3 else ''} | {r['cold_0.01']['products']} | "
              f"{w2['products'] if w2 else ''} | {q['rel_error']:.1e} ({q['bound']:.1e}) |")
    warm = [r for r in recs if "warm_0.001" in r]
    if warm:
        for tol in ("0.001", "0.01"):
            c = sum(r[f"cold_{tol}"]["products"] for r in warm)
            w = sum(r[f"warm_{tol}"]["products"] for r in warm)
            print(f"- tol {tol}: warm/cold products {w}/{c} = {w / c:.2f}")


def parse_variant(text: str) -> dict:
    """"k=1,tol=1e-2,warm_start=false" -> probe options."""
    out: dict = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        low = value.lower()
        out[key] = (low == "true") if low in ("true", "false") else (
            int(value) if value.isdigit() else float(value))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="fashion_mnist.npz or official folder")
    parser.add_argument("--model", default="mlp", help="sgdlab model name (mlp, cnn, ...)")
    parser.add_argument("--n-train", type=int, default=0, help="0 = all 60,000")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--probe-n", type=int, default=2048)
    parser.add_argument("--variants", nargs="+", default=["tol=1e-3"],
                        help="hessian probe options per probed run, e.g. tol=1e-2,warm_start=false")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tracking", type=int, nargs="+", default=None,
                        help="instead: warm against cold lambda_max every N SGD steps")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tracking:
        found = {every: tracking(args, every) for every in args.tracking}
        for every, recs in found.items():
            tracking_table(every, recs)
        if args.out:
            args.out.write_text(json.dumps(found, indent=2))
        return
    variants = [parse_variant(v) for v in args.variants]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(config(args, []))  # warm-up (data loading, kernels)
        for r in range(args.repeat):
            base, _ = timed_run(config(args, []), Path(tmp) / f"a{r}")
            row = {"repeat": r, "sgdlab_s": base, "variants": []}
            for v, options in enumerate(variants):
                probe = [{"name": "hessian", "every": "epoch", "k": 1, "n": args.probe_n,
                          **options}]
                root = Path(tmp) / f"b{r}-{v}"
                probed, run_id = timed_run(config(args, probe), root)
                m = Store(root).metrics(runs=[run_id], names=[
                    "hessian/seconds", "hessian/products", "hessian/lambda_max",
                    "hessian/residual_max"])
                by = {n: m[m["name"] == n]["value"].tolist() for n in set(m["name"])}
                row["variants"].append({
                    "options": options, "sgdlab_probed_s": probed, "ratio": probed / base,
                    "probe_s": sum(by["hessian/seconds"]), "products": by["hessian/products"],
                    "lambda_max": by["hessian/lambda_max"],
                    "residual_max": by["hessian/residual_max"]})
            row["plain_loop_s"] = plain_loop(config(args, []))
            rows.append(row)
    device = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() and \
        args.device != "cpu" else f"cpu ({torch.get_num_threads()} threads, {platform.node()})"
    print(f"device: {device}, torch {torch.__version__}, model {args.model}, "
          f"n_train={args.n_train or 60000}, epochs={args.epochs}, probe subset={args.probe_n}")
    print("| repeat | plain loop s | sgdlab s | probe options | sgdlab + lambda_max s | ratio | "
          "probe s | products per measurement |")
    print("|---:|---:|---:|---|---:|---:|---:|---|")
    for row in rows:
        for v in row["variants"]:
            opts = ", ".join(f"{k}={val}" for k, val in v["options"].items()) or "defaults"
            print(f"| {row['repeat']} | {row['plain_loop_s']:.1f} | {row['sgdlab_s']:.1f} | "
                  f"{opts} | {v['sgdlab_probed_s']:.1f} | {v['ratio']:.2f} | "
                  f"{v['probe_s']:.1f} | {', '.join(str(int(p)) for p in v['products'])} |")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
