"""``sgdlab demo``: an MLP on MNIST-1D (generated, no download), trained in well under a
minute on a CPU, with the top-3 Hessian eigenvalues (on 1,000 fixed training examples)
and the weight norms tracked every epoch."""

from __future__ import annotations

from pathlib import Path

from sgdlab.config import load_config

DEMO = {
    "name": "demo",
    "seed": 0,
    "data": {"name": "mnist1d", "normalize": "standardize"},
    "model": {"name": "mlp", "depth": 2, "width": 256, "activation": "relu"},
    "optim": {"lr": 0.05, "momentum": 0.9, "batch_size": 100},
    "train": {"epochs": 30, "loss": "cross_entropy"},
    "probes": [
        {"name": "hessian", "every": "epoch", "k": 3, "n": 1000},
        {"name": "weights", "every": "epoch"},
    ],
}


def run_demo(store, quiet: bool = False) -> Path:
    from sgdlab.report import write_report
    from sgdlab.train import train

    cfg = load_config(None, DEMO)
    run = train(cfg, store, progress=False if quiet else None)
    print(f"{run.id}\t{run.status}")
    return write_report(store, run.id)
