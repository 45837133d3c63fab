import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"

torch.set_num_threads(1)


@pytest.fixture
def store(tmp_path):
    from sgdlab.store import Store

    return Store(tmp_path / "store")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Tests never download and never write outside tmp_path."""
    monkeypatch.setenv("SGDLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "default-store"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield


def as_killed(run):
    """Leave a run as a SIGKILL does: status "running", its training process gone (a pid
    above Linux's pid_max, 2**22, that no process can hold)."""
    run.set_status("running")
    sessions = run.read_json("environment")["sessions"]
    run.write_json("environment", {"sessions": [{**s, "pid": 2**22 + 12345} for s in sessions]})


def small_config(**overrides):
    """A run that trains in well under a second: an MLP on scikit-learn's digits."""
    from sgdlab.config import load_config

    base = {
        "name": "t", "seed": 0,
        "data": {"name": "digits", "normalize": "standardize", "download": False},
        "model": {"name": "mlp", "depth": 1, "width": 32},
        "optim": {"lr": 0.05, "batch_size": 64, "momentum": 0.9},
        "train": {"epochs": 3},
    }
    for key, value in overrides.items():
        node = base
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return load_config(None, base)


os.environ.setdefault("MPLBACKEND", "Agg")
