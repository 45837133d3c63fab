"""A model, dataset and loss of one's own (examples/seqlab: an LSTM on the marked-sum task)
through `sgdlab run` with probes, `sgdlab sweep --workers 2` and `sgdlab report`, and the
contracts of the three import paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, small_config

from sgdlab.config import load_config
from sgdlab.errors import ConfigError
from sgdlab.store import Store
from sgdlab.train import train

EXAMPLES = REPO / "examples"
FAST = ["--set", "data.options.n=400", "--set", "data.options.n_test=100",
        "--set", "train.epochs=2",
        "--set", "probes=[{name='hessian', k=2, n=64}, {name='weights'}]"]


def sgdlab(*args, store, cwd=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sgdlab.cli", "--store", str(store), "-q",
                           *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def test_the_example_package_through_run_sweep_and_report(tmp_path):
    store = tmp_path / "store"
    # run from another folder: the package is found beside the config file
    r = sgdlab("run", str(EXAMPLES / "sequence.toml"), *FAST, store=store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[0]
    m = Store(store).metrics(runs=[run_id])
    names = set(m["name"])
    assert {"hessian/lambda_max", "weights/norm", "test/acc", "train/loss"} <= names
    run = Store(store).get_run(run_id)
    assert run.config["model"]["name"] == "seqlab.model:lstm"
    assert run.array_names() == ["hessian"]

    r = sgdlab("sweep", str(EXAMPLES / "sequence_grid.toml"), "--workers", "2",
               "--set", "seeds=[0]", "--set", "product.optim.lr=[0.1, 0.3]", *FAST,
               store=store, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    runs = Store(store).runs(group="seq-lr")
    assert sorted(runs["status"]) == ["finished", "finished"]
    assert sorted(runs["optim.lr"]) == [0.1, 0.3]

    r = sgdlab("report", run_id, store=store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = r.stdout.strip()
    text = Path(page).read_text()
    assert text.count("data:image/png;base64") >= 4 and "seqlab.model:lstm" in text


def test_a_user_model_is_bit_identical_to_the_same_builtin(store, tmp_path, monkeypatch):
    """The import path changes nothing but where the builder comes from."""
    pkg = tmp_path / "userzoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "zoo.py").write_text(
        "from sgdlab.models import MODELS\n"
        "def same_mlp(cfg, input_shape, n_outputs):\n"
        "    return MODELS['mlp'](cfg, input_shape, n_outputs)\n"
        "def per_example_ce(outputs, targets):\n"
        "    import torch.nn.functional as F\n"
        "    return F.cross_entropy(outputs, targets, reduction='none')\n")
    monkeypatch.chdir(tmp_path)  # the current directory is searched
    a = train(small_config(), store, progress=False)
    b = train(small_config(**{"model.name": "userzoo.zoo:same_mlp",
                              "train.loss": "userzoo.zoo:per_example_ce"}), store, progress=False)
    wa, wb = a.load_tensors("final"), b.load_tensors("final")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_user_data_contract(tmp_path, monkeypatch, store):
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "def blobs(cfg, seed, n=300):\n"
        "    g = np.random.default_rng(seed)\n"
        "    y = np.arange(n) % 3\n"
        "    x = g.normal(size=(n, 5)) + 3 * np.eye(5)[y]\n"
        "    return x, y, x[:60], y[:60]\n"
        "def regression(cfg, seed):\n"
        "    x = np.linspace(-1, 1, 200)[:, None]\n"
        "    return {'x_train': x, 'y_train': np.hstack([x, x**2]), 'x_test': x[:20],\n"
        "            'y_test': np.hstack([x, x**2])[:20]}\n")
    monkeypatch.chdir(tmp_path)
    run = train(small_config(**{"data.name": "mydata:blobs", "data.options": {"n": 240},
                                "data.n_train": 120}), store, progress=False)
    m = store.metrics(runs=[run.id], names=["n_train"])
    assert m["value"].tolist() == [120.0] and run.status == "finished"
    run = train(small_config(**{"data.name": "mydata:regression", "train.loss": "mse",
                                "optim.batch_size": 50}), store, progress=False)
    assert run.status == "finished"
    assert "train/acc" not in set(store.metrics(runs=[run.id])["name"])


def test_import_paths_are_checked_where_the_config_enters(tmp_path, monkeypatch):
    from sgdlab.train.validate import validate

    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd.py").write_text("VALUE = 3\ndef build(cfg, shape, n, *, width=4):\n"
                                     "    return None\n")
    cases = {
        "model.name=no_such_module:build": "no module named 'no_such_module'",
        "model.name=odd:nothing": "odd has no attribute 'nothing'",
        "model.name=odd:VALUE": "is a int, not a callable",
        "model.name='odd:'": "not an import path",
        "model.options.depth=3": "model.options: only for a model given by import path",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            validate(load_config(None, [override]))
    with pytest.raises(ConfigError, match=r"model.options.height: not an option of build"):
        validate(load_config(None, ["model.name='odd:build'", "model.options.height=2"]))
    cfg = validate(load_config(None, ["model.name='odd:build'", "data.name='digits'"]))
    store = Store(tmp_path / "s")
    with pytest.raises(ConfigError, match="returned a NoneType, expected a torch.nn.Module"):
        train(cfg, store, progress=False)
    assert not (tmp_path / "s").exists()


def test_the_sequence_task_is_balanced_and_seeded():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from seqlab.data import marked_sum
    finally:
        sys.path.remove(str(EXAMPLES))
    a = marked_sum(None, 0, n=4000, n_test=10)
    b = marked_sum(None, 0, n=4000, n_test=10)
    assert np.array_equal(a["x_train"], b["x_train"])
    counts = np.bincount(a["y_train"], minlength=4) / 4000
    assert np.all(np.abs(counts - 0.25) < 0.03)  # equal-probability bins of the triangle
    x = a["x_train"]
    assert x.shape == (4000, 16, 2) and np.all(x[:, :, 1].sum(1) == 2)


def test_experiment_set_and_resume_take_import_paths(tmp_path, monkeypatch, store):
    from conftest import as_killed

    from sgdlab.experiments.base import build_configs
    from sgdlab.experiments.registry import EXPERIMENTS
    from sgdlab.train import resume

    (tmp_path / "zoo2.py").write_text(
        "from sgdlab.models import MODELS\n"
        "def mlp(cfg, input_shape, n_outputs):\n"
        "    return MODELS['mlp'](cfg, input_shape, n_outputs)\n")
    monkeypatch.chdir(tmp_path)
    configs = build_configs(EXPERIMENTS["edge-of-stability"], "smoke",
                            ["model.name='zoo2:mlp'"])
    assert configs and all(c.model.name == "zoo2:mlp" for c in configs)
    run = train(small_config(**{"model.name": "zoo2:mlp", "train.epochs": 1}), store,
                progress=False)
    as_killed(run)
    assert resume(store, run.id, progress=False).status == "finished"
