"""The documented examples run as written."""

import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA

from sgdlab.config import load_config
from sgdlab.sweep import load_grid


def test_own_loop_example_runs():
    r = subprocess.run([sys.executable, str(REPO / "examples" / "own_loop.py")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "lambda_max" in r.stdout and "Tr H =" in r.stdout


def test_example_configs_are_valid():
    cfg = load_config(REPO / "examples" / "fashion_mnist_cnn.toml")
    assert cfg.model.name == "cnn" and cfg.probes[0]["name"] == "hessian"
    assert len(load_grid(REPO / "examples" / "lr_batch_grid.toml").configs) == 18


@pytest.mark.skipif(not (SHARED_DATA / "fashion_mnist.npz").exists(),
                    reason="needs ../shared/datasets")
def test_fashion_mnist_example_through_the_cli(tmp_path):
    """The offline Fashion-MNIST copy found through SGDLAB_DATA, trained via the CLI."""
    import os

    from sgdlab.store import Store

    env = {**os.environ, "SGDLAB_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "sgdlab.cli", "--store", str(tmp_path), "-q", "run",
         str(REPO / "examples" / "fashion_mnist_cnn.toml"), "--set", "data.n_train=1000",
         "--set", "data.n_test=500", "--set", "model.width_mult=0.25", "--set", "train.epochs=2",
         "--set", "optim.batch_size=32",
         "--set", "probes=[{name='hessian', every='end', k=1, n=256}]"],
        capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    (run,) = Store(tmp_path).find_runs()
    m = Store(tmp_path).metrics(runs=[run.id])
    final = m[m["name"] == "test/acc"]["value"].iloc[-1]
    assert final > 0.3  # ten classes: the subset is drawn across classes, not the first one
    assert (m["name"] == "hessian/lambda_max").sum() == 1
