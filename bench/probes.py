"""Overhead of measuring the trajectory: the simple CNN on Fashion-MNIST, trained once
without probes and once with lambda_max (top-1 Hessian eigenvalue on a fixed probe subset
of 2,048 examples) every epoch, in one process; prints the wall times and their ratio.

    python bench/probes.py --data ../shared/datasets/fashion_mnist.npz            # paper setup
    python bench/probes.py --data ../shared/datasets/fashion_mnist.npz --n-train 8192 --epochs 1

Also compared: a plain PyTorch loop over the same tensors (the floor any trainer pays).
Goal (issue): at most 10% overhead on a GPU. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from sgdlab.config import load_config
from sgdlab.data import iterate_batches, load_data
from sgdlab.models import build_model
from sgdlab.store import Store
from sgdlab.train import make_loss, train


def config(args, probes: list[dict]):
    return load_config(None, {
        "name": "bench", "device": args.device,
        "data": {"name": "fashion-mnist", "file": args.data, "n_train": args.n_train,
                 "download": False},
        "model": {"name": "cnn"},
        "optim": {"lr": 0.05, "batch_size": 128},
        "train": {"epochs": args.epochs, "eval_every": 10**9, "checkpoint_every": 10**9},
        "probes": probes,
    })


def plain_loop(cfg) -> float:
    """The same training in a hand-written PyTorch loop (no evaluation, no logging)."""
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available()
                          else "cpu")
    data = load_data(cfg.data, cfg.seed, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr)
    loss_fn = make_loss("cross_entropy")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="fashion_mnist.npz or official folder")
    parser.add_argument("--n-train", type=int, default=0, help="0 = all 60,000")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--probe-n", type=int, default=2048)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    probe = [{"name": "hessian", "every": "epoch", "k": 1, "n": args.probe_n}]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(config(args, []))  # warm-up (data loading, kernels)
        for r in range(args.repeat):
            base, _ = timed_run(config(args, []), Path(tmp) / f"a{r}")
            probed, run_id = timed_run(config(args, probe), Path(tmp) / f"b{r}")
            loop = plain_loop(config(args, []))
            m = Store(Path(tmp) / f"b{r}").metrics(runs=[run_id], names=["hessian/seconds"])
            rows.append({"plain_loop_s": loop, "sgdlab_s": base, "sgdlab_probed_s": probed,
                         "overhead": probed / base - 1, "probe_s": float(m["value"].sum()),
                         "measurements": len(m)})
    device = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() and \
        args.device != "cpu" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {device}, torch {torch.__version__}, n_train={args.n_train or 60000}, "
          f"epochs={args.epochs}, probe subset={args.probe_n}")
    print("| plain loop s | sgdlab s | sgdlab + lambda_max s | overhead | probe s (count) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['plain_loop_s']:.2f} | {r['sgdlab_s']:.2f} | {r['sgdlab_probed_s']:.2f} | "
              f"{100 * r['overhead']:.1f}% | {r['probe_s']:.2f} ({r['measurements']}) |")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
