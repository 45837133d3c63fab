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


def _python_blocks(path, after):
    """The ```python blocks of a Markdown file that follow the heading ``after``."""
    text = path.read_text()
    text = text[text.index(after):]
    blocks, parts = [], text.split("```python\n")[1:]
    for part in parts:
        blocks.append(part.split("```", 1)[0])
    return blocks


def _namespace(tmp_path, monkeypatch):
    import torch
    import torch.nn.functional as F

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    return {"model": model, "loss_fn": F.cross_entropy, "x": x, "y": y,
            "batches": [(x[:16], y[:16]), (x[16:], y[16:])]}


def test_the_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    ns = _namespace(tmp_path, monkeypatch)
    for heading in ("## Curvature on any model", "## In Python"):
        exec(_python_blocks(REPO / "README.md", heading)[0], ns)
    exec(_python_blocks(REPO / "README.md", "## Curvature on any model")[1], ns)
    assert ns["run"].status == "finished" and ns["tr"].estimate > 0


def test_the_architecture_examples_run_as_written(tmp_path, monkeypatch, capsys):
    from conftest import small_config

    from sgdlab.store import Store
    from sgdlab.sweep import make_sweep

    ns = _namespace(tmp_path, monkeypatch)
    store = Store(tmp_path / "runs")
    ns.update(sgdlab=__import__("sgdlab"), store=store,
              cfg=small_config(probes=[{"name": "grad_norm", "every": 5, "scale": 2.0}]),
              sweep=make_sweep({"name": "s", "base": {"data": {"name": "digits"},
                                                      "train": {"epochs": 1}},
                                "product": {"optim.lr": [0.05, 0.1]}}))
    probe, curvature, sink, executor = _python_blocks(REPO / "docs" / "architecture.md",
                                                      "## The probe protocol")[:4]
    from sgdlab.probes import PROBES

    try:
        exec(probe, ns)
        exec(sink, ns)  # trains cfg with the grad_norm probe and the PrintLoss sink
    finally:
        PROBES.pop("grad_norm", None)
    run = store.runs()
    assert run["status"].tolist() == ["finished"]
    assert "grad_norm/value" in set(store.metrics()["name"])
    printed = capsys.readouterr().out.split("\n")
    assert len(printed) > 3  # the sink printed train/loss at each evaluation
    exec(executor, ns)
    assert len(store.runs(group="s")) == 2
    assert "OPERATORS" in curvature  # a fragment of the registry, shown not run
