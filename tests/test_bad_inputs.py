"""Bad input, table-driven: every case exits with status 2, prints one line on stderr naming
the field or the file, no traceback, and leaves the store exactly as it was.

Categories (at least five cases each): config fields (every section), CLI (every command),
data files, grids, user import paths (missing, or returning the wrong thing), tracker
destinations that cannot be written. Commands run in this process through
``sgdlab.cli.main`` (a few through a subprocess at the end)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import GOOD

from sgdlab import cli

USER_MODULES = {
    "mine/__init__.py": "",
    "mine/models.py": """
import torch
from torch import nn
NOT_CALLABLE = 3
def returns_none(cfg, shape, n):
    return None
def wrong_shape(cfg, shape, n):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), n + 1))
def raises(cfg, shape, n):
    raise ValueError("width must be even")
def no_parameters(cfg, shape, n):
    return nn.Flatten()
def one_argument(cfg):
    return nn.Linear(2, 2)
def flat(cfg, shape, n, *, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), n))
def returns_tuple(cfg, shape, n):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = flat(cfg, shape, n)
        def forward(self, x):
            return self.f(x), 0
    return Pair()
""",
    "mine/broken.py": "raise RuntimeError('this module is broken')\n",
    "mine/data.py": """
import numpy as np
def three(cfg, seed):
    return np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2))
def mismatch(cfg, seed):
    return np.zeros((10, 2)), np.zeros(8, int), np.zeros((2, 2)), np.zeros(2, int)
def no_test_labels(cfg, seed):
    return {"x_train": np.zeros((10, 2)), "y_train": np.zeros(10, int),
            "x_test": np.zeros((2, 2))}
def empty(cfg, seed):
    return np.zeros((0, 2)), np.zeros(0, int), np.zeros((2, 2)), np.zeros(2, int)
def strings(cfg, seed):
    return np.array([["a", "b"]] * 10), np.zeros(10, int), np.zeros((2, 2)), np.zeros(2, int)
def fractional_labels(cfg, seed):
    return np.zeros((10, 2)), np.full(10, 0.5), np.zeros((2, 2)), np.zeros(2, int)
def raises(cfg, seed):
    raise FileNotFoundError("corpus.txt")
""",
    "mine/losses.py": """
import torch.nn.functional as F
def mean_loss(outputs, targets):
    return F.cross_entropy(outputs, targets)
def wrong_dtype(outputs, targets):
    return targets
""",
}


def _data_files(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 28, 28)).astype(np.uint8)
    y = np.arange(20) % 10
    (tmp / "random.npz").write_bytes(os.urandom(2048))
    np.save(tmp / "one.npy", x)
    np.savez(tmp / "empty.npz", x_train=x[:0], y_train=y[:0], x_test=x[:5], y_test=y[:5])
    np.savez(tmp / "partial.npz", x_train=x, y_train=y)
    nan = x.astype(np.float32) / 255
    nan[1, 2, 3] = np.nan
    np.savez(tmp / "nan.npz", x_train=nan, y_train=y, x_test=nan[:5], y_test=y[:5])
    np.savez(tmp / "labels12.npz", x_train=x, y_train=y + 3, x_test=x[:5], y_test=y[:5])
    np.savez(tmp / "shape.npz", x_train=x[:, :10], y_train=y, x_test=x[:5, :10], y_test=y[:5])
    np.savez(tmp / "count.npz", x_train=x, y_train=y[:7], x_test=x[:5], y_test=y[:5])
    np.savez(tmp / "text.npz", x_train=np.array([["a"] * 784] * 20), y_train=y,
             x_test=np.array([["a"] * 784] * 5), y_test=y[:5])
    np.savez(tmp / "halves.npz", x_train=x, y_train=y + 0.5, x_test=x[:5], y_test=y[:5])
    (tmp / "cifar.tar.gz").write_bytes(os.urandom(4096))
    (tmp / "idx").mkdir()
    (tmp / "notes.txt").write_text("not data\n")


def _grids(tmp: Path) -> None:
    grids = {
        "bad_toml.toml": "name = \n",
        "unknown_key.toml": 'base = "good.toml"\nworkers = 2\n[product]\n"optim.lr" = [0.1]\n',
        "negative_lr.toml": 'base = "good.toml"\n[product]\n"optim.lr" = [0.1, -1.0]\n',
        "empty_list.toml": 'base = "good.toml"\n[product]\n"optim.lr" = []\n',
        "unknown_field.toml": 'base = "good.toml"\n[product]\n"optim.nope" = [1, 2]\n',
        "duplicate.toml": 'base = "good.toml"\n[product]\n"optim.lr" = [0.1, 0.1]\n',
        "zip_lengths.toml": ('base = "good.toml"\n[[zip]]\n"optim.lr" = [0.1, 0.2]\n'
                             '"train.epochs" = [1]\n'),
        "seeds.toml": 'base = "good.toml"\nseeds = 3\n[product]\n"optim.lr" = [0.1]\n',
        "missing_base.toml": 'base = "nowhere.toml"\n[product]\n"optim.lr" = [0.1]\n',
        "swept_name.toml": 'base = "good.toml"\n[product]\nname = ["a", "b"]\n',
        "not_a_list.toml": 'base = "good.toml"\n[product]\n"optim.lr" = 0.1\n',
        "bad_name.toml": 'name = "a b"\nbase = "good.toml"\n[product]\n"optim.lr" = [0.1]\n',
        "ok.toml": 'name = "ok"\nbase = "good.toml"\n[product]\n"optim.lr" = [0.1, 0.2]\n',
    }
    for name, text in grids.items():
        (tmp / name).write_text(text)


# (id, argv, expected text in the one stderr line); {t} is the case folder
CONFIG = [
    ("unknown-data-key", ["run", "{t}/good.toml", "--set", "data.nope=1"], "data.nope"),
    ("lr-string", ["run", "{t}/good.toml", "--set", "optim.lr='fast'"], "optim.lr"),
    ("lr-zero", ["run", "{t}/good.toml", "--set", "optim.lr=0"], "optim.lr"),
    ("momentum-one", ["run", "{t}/good.toml", "--set", "optim.momentum=1.0"], "optim.momentum"),
    ("nesterov-no-momentum", ["run", "{t}/good.toml", "--set", "optim.nesterov=true"],
     "optim.nesterov"),
    ("weight-decay", ["run", "{t}/good.toml", "--set", "optim.weight_decay=-1"],
     "optim.weight_decay"),
    ("batch-negative", ["run", "{t}/good.toml", "--set", "optim.batch_size=-1"],
     "optim.batch_size"),
    ("batch-too-large", ["run", "{t}/good.toml", "--set", "optim.batch_size=100000"],
     "optim.batch_size"),
    ("optimizer", ["run", "{t}/good.toml", "--set", "optim.name='adam'"], "optim.name"),
    ("step-lr-no-milestones", ["run", "{t}/good.toml", "--set",
                               "optim.lr_schedule={kind='step'}"],
     "optim.lr_schedule.milestones"),
    ("milestones-decreasing", ["run", "{t}/good.toml", "--set",
                               "optim.lr_schedule={kind='step', milestones=[5, 2]}"],
     "optim.lr_schedule.milestones"),
    ("lr-schedule-kind", ["run", "{t}/good.toml", "--set", "optim.lr_schedule.kind='linear'"],
     "optim.lr_schedule.kind"),
    ("cyclic-batch-zero", ["run", "{t}/good.toml", "--set",
                           "optim.batch_schedule={kind='cyclic', min_factor=0.0}"],
     "optim.batch_schedule.min_factor"),
    ("step-batch-no-milestones", ["run", "{t}/good.toml", "--set",
                                  "optim.batch_schedule.kind='step'"],
     "optim.batch_schedule.milestones"),
    ("nsgd-k", ["run", "{t}/good.toml", "--set", "optim.nsgd_k=0"], "optim.nsgd_k"),
    ("epochs", ["run", "{t}/good.toml", "--set", "train.epochs=0"], "train.epochs"),
    ("loss-name", ["run", "{t}/good.toml", "--set", "train.loss='hinge'"], "train.loss"),
    ("eval-every", ["run", "{t}/good.toml", "--set", "train.eval_every=-1"],
     "train.eval_every"),
    ("keep-checkpoints", ["run", "{t}/good.toml", "--set", "train.keep_checkpoints=0"],
     "train.keep_checkpoints"),
    ("max-steps", ["run", "{t}/good.toml", "--set", "train.max_steps=-1"], "train.max_steps"),
    ("model-width", ["run", "{t}/good.toml", "--set", "model.width=0"], "model.width"),
    ("model-dropout", ["run", "{t}/good.toml", "--set", "model.dropout=1.0"], "model.dropout"),
    ("model-activation", ["run", "{t}/good.toml", "--set", "model.activation='swish'"],
     "model.activation"),
    ("model-name", ["run", "{t}/good.toml", "--set", "model.name='transformer'"],
     "model.name"),
    ("label-noise", ["run", "{t}/good.toml", "--set", "data.label_noise=2"],
     "data.label_noise"),
    ("normalize", ["run", "{t}/good.toml", "--set", "data.normalize='zscore'"],
     "data.normalize"),
    ("n-train-negative", ["run", "{t}/good.toml", "--set", "data.n_train=-5"], "data.n_train"),
    ("n-train-too-many", ["run", "{t}/good.toml", "--set", "data.n_train=100000"],
     "data.n_train"),
    ("dataset-name", ["run", "{t}/good.toml", "--set", "data.name='imagenet'"], "data.name"),
    ("options-builtin", ["run", "{t}/good.toml", "--set", "data.options={n=3}"],
     "data.options"),
    ("teacher-noise", ["run", "{t}/good.toml", "--set", "data.name='teacher-student'",
                       "--set", "data.label_noise=0.1", "--set", "train.loss='mse'"],
     "data.label_noise"),
    ("seed", ["run", "{t}/good.toml", "--set", "seed=-1"], "seed"),
    ("device", ["run", "{t}/good.toml", "--set", "device='tpu'"], "device"),
    ("dtype", ["run", "{t}/good.toml", "--set", "dtype='float16'"], "dtype"),
    ("run-name", ["run", "{t}/good.toml", "--set", "name='a b'"], "name"),
    ("section-not-table", ["run", "{t}/good.toml", "--set", "optim=3"], "optim"),
    ("probe-name", ["run", "{t}/good.toml", "--set", "probes=[{name='nope'}]"],
     "probes[0].name"),
    ("probe-option", ["run", "{t}/good.toml", "--set", "probes=[{name='hessian', k=0}]"],
     "probes[0].k"),
    ("probe-every", ["run", "{t}/good.toml", "--set", "probes=[{name='weights', every=0}]"],
     "probes[0].every"),
    ("set-no-equals", ["run", "{t}/good.toml", "--set", "optim.lr"], "optim.lr"),
    ("config-folder", ["run", "{t}"], "is a folder"),
    ("config-missing", ["run", "{t}/absent.toml"], "absent.toml"),
    ("config-toml", ["run", "{t}/broken.toml"], "broken.toml"),
    ("config-binary", ["run", "{t}/binary.toml"], "binary.toml"),
    ("config-unknown-section", ["run", "{t}/section.toml"], "optimizer"),
    ("config-date", ["run", "{t}/date.toml"], "data.options.when"),
]

CLI = [
    ("no-command", [], "command"),
    ("unknown-command", ["train"], "train"),
    ("run-unknown-option", ["run", "{t}/good.toml", "--fast"], "--fast"),
    ("resume-unknown", ["resume", "no-such-run"], "no-such-run"),
    ("resume-finished", ["resume", "{run}"], "already finished"),
    ("show-unknown", ["show", "no-such-run"], "no-such-run"),
    ("report-unknown", ["report", "nope"], "nope"),
    ("report-into-file", ["report", "{run}", "-o", "{t}/notes.txt/r.html"], "notes.txt"),
    ("ls-status", ["ls", "--status", "bogus"], "--status"),
    ("store-is-file", ["--store", "{t}/notes.txt", "ls"], "notes.txt"),
    ("store-is-file-run", ["--store", "{t}/notes.txt", "run", "{t}/good.toml"], "notes.txt"),
    ("sweep-workers", ["sweep", "{t}/ok.toml", "--workers", "-1"], "--workers"),
    ("sweep-threads", ["sweep", "{t}/ok.toml", "--threads", "0"], "--threads"),
    ("sweep-table-unknown", ["sweep-table", "no-such-sweep"], "no-such-sweep"),
    ("sweep-table-at", ["sweep-table", "x", "--at", "median"], "--at"),
    ("experiment-unknown", ["experiment", "no-such-experiment"], "no-such-experiment"),
    ("experiment-no-name", ["experiment"], "experiment"),
    ("experiment-scale", ["experiment", "edge-of-stability", "--scale", "huge"], "--scale"),
    ("experiment-set", ["experiment", "edge-of-stability", "--set", "optim.lr=-1"],
     "optim.lr"),
    ("export-unknown-run", ["export", "nope", "--to", "tensorboard", "{t}/tb"], "nope"),
    ("export-kind", ["export", "{run}", "--to", "comet", "{t}/x"], "kind"),
    ("export-no-to", ["export", "{run}"], "--to"),
    ("demo-store-file", ["--store", "{t}/notes.txt", "demo"], "notes.txt"),
    ("landscape-unknown-run", ["landscape", "no-such-run", "slice"], "no-such-run"),
    ("landscape-kind", ["landscape", "{run}", "contour"], "kind"),
    ("landscape-to-on-slice", ["landscape", "{run}", "slice", "--to", "{run}"], "--to"),
    ("landscape-interpolate-no-to", ["landscape", "{run}", "interpolate"], "--to"),
    ("landscape-no-history", ["landscape", "{run}", "trajectory"], "history"),
    ("landscape-directions-file", ["landscape", "{run}", "slice", "--directions",
                                   "{t}/notes.txt"], "notes.txt"),
]

DATA = [
    ("random-npz", ["run", "{t}/good.toml", "--set", "data.name='fashion-mnist'", "--set",
                    "data.file='{t}/random.npz'"], "random.npz: not an .npz file"),
    ("npy", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
             "data.file='{t}/one.npy'"], "one.npy: a .npy file holds one array"),
    ("empty", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
               "data.file='{t}/empty.npz'"], "empty.npz: no training examples"),
    ("missing-arrays", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                        "data.file='{t}/partial.npz'"], "partial.npz: missing arrays"),
    ("nan-pixels", ["run", "{t}/good.toml", "--set", "data.name='fashion-mnist'", "--set",
                    "data.file='{t}/nan.npz'"], "nan.npz"),
    ("labels-range", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                      "data.file='{t}/labels12.npz'"], "labels12.npz: labels outside"),
    ("image-shape", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                     "data.file='{t}/shape.npz'"], "shape.npz: images of shape"),
    ("label-count", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                     "data.file='{t}/count.npz'"], "count.npz"),
    ("text-inputs", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                     "data.file='{t}/text.npz'"], "text.npz: inputs must be numbers"),
    ("fractional-labels", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                           "data.file='{t}/halves.npz'"], "halves.npz: labels must be"),
    ("missing-file", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                      "data.file='{t}/absent.npz'"], "absent.npz"),
    ("idx-folder", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                    "data.file='{t}/idx'"], "idx: missing IDX files"),
    ("text-file", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                   "data.file='{t}/notes.txt'"], "notes.txt: not an .npz file"),
    ("cifar-junk", ["run", "{t}/good.toml", "--set", "data.name='cifar10'", "--set",
                    "data.file='{t}/cifar.tar.gz'"], "cifar.tar.gz"),
    ("mnist1d-text", ["run", "{t}/good.toml", "--set", "data.name='mnist1d'", "--set",
                      "data.file='{t}/notes.txt'"], "notes.txt"),
    ("no-download", ["run", "{t}/good.toml", "--set", "data.name='mnist'", "--set",
                     "data.root='{t}/nodata'", "--set", "data.download=false"], "nodata"),
]

GRIDS = [
    ("grid-missing", ["sweep", "{t}/absent_grid.toml"], "absent_grid.toml"),
    ("grid-folder", ["sweep", "{t}"], "is a folder"),
    ("grid-toml", ["sweep", "{t}/bad_toml.toml"], "bad_toml.toml"),
    ("grid-unknown-key", ["sweep", "{t}/unknown_key.toml"], "workers"),
    ("grid-negative-lr", ["sweep", "{t}/negative_lr.toml"], "product.optim.lr[1]"),
    ("grid-empty-list", ["sweep", "{t}/empty_list.toml"], "product.optim.lr"),
    ("grid-unknown-field", ["sweep", "{t}/unknown_field.toml"], "optim.nope"),
    ("grid-duplicate", ["sweep", "{t}/duplicate.toml"], "same run"),
    ("grid-zip", ["sweep", "{t}/zip_lengths.toml"], "zip[0]"),
    ("grid-seeds", ["sweep", "{t}/seeds.toml"], "seeds"),
    ("grid-base", ["sweep", "{t}/missing_base.toml"], "nowhere.toml"),
    ("grid-swept-name", ["sweep", "{t}/swept_name.toml"], "name"),
    ("grid-not-list", ["sweep", "{t}/not_a_list.toml"], "product.optim.lr"),
    ("grid-name", ["sweep", "{t}/bad_name.toml"], "name"),
    ("grid-set-swept", ["sweep", "{t}/ok.toml", "--set", "optim.lr=0.3"], "optim.lr"),
    ("grid-set-bad", ["sweep", "{t}/ok.toml", "--set", "train.epochs=0"], "train.epochs"),
    ("grid-set-zip", ["sweep", "{t}/ok.toml", "--set", "zip=[]"], "zip"),
]

USER = [
    ("no-module", ["run", "{t}/good.toml", "--set", "model.name='nosuch.models:build'"],
     "no module named 'nosuch'"),
    ("no-attribute", ["run", "{t}/good.toml", "--set", "model.name='mine.models:absent'"],
     "mine.models has no attribute 'absent'"),
    ("not-callable", ["run", "{t}/good.toml", "--set",
                      "model.name='mine.models:NOT_CALLABLE'"], "not a callable"),
    ("bad-syntax", ["run", "{t}/good.toml", "--set", "model.name='mine models:x'"],
     "not an import path"),
    ("module-raises", ["run", "{t}/good.toml", "--set", "model.name='mine.broken:build'"],
     "importing mine.broken failed"),
    ("returns-none", ["run", "{t}/good.toml", "--set",
                      "model.name='mine.models:returns_none'"], "returned a NoneType"),
    ("wrong-shape", ["run", "{t}/good.toml", "--set", "model.name='mine.models:wrong_shape'"],
     "expected a tensor of shape (2, 10)"),
    ("builder-raises", ["run", "{t}/good.toml", "--set", "model.name='mine.models:raises'"],
     "raised ValueError: width must be even"),
    ("no-parameters", ["run", "{t}/good.toml", "--set",
                       "model.name='mine.models:no_parameters'"], "no trainable parameters"),
    ("one-argument", ["run", "{t}/good.toml", "--set",
                      "model.name='mine.models:one_argument'"], "positional"),
    ("unknown-option", ["run", "{t}/good.toml", "--set", "model.name='mine.models:flat'",
                        "--set", "model.options.depth=2"], "model.options.depth"),
    ("returns-tuple", ["run", "{t}/good.toml", "--set",
                       "model.name='mine.models:returns_tuple'"], "to a tuple"),
    ("data-three", ["run", "{t}/good.toml", "--set", "data.name='mine.data:three'"],
     "returned a tuple of 3"),
    ("data-mismatch", ["run", "{t}/good.toml", "--set", "data.name='mine.data:mismatch'"],
     "10 inputs x_train but 8 targets"),
    ("data-missing-key", ["run", "{t}/good.toml", "--set",
                          "data.name='mine.data:no_test_labels'"], "without y_test"),
    ("data-empty", ["run", "{t}/good.toml", "--set", "data.name='mine.data:empty'"],
     "no training examples"),
    ("data-strings", ["run", "{t}/good.toml", "--set", "data.name='mine.data:strings'"],
     "must hold numbers"),
    ("data-fractional", ["run", "{t}/good.toml", "--set",
                         "data.name='mine.data:fractional_labels'"], "labels must be integers"),
    ("data-raises", ["run", "{t}/good.toml", "--set", "data.name='mine.data:raises'"],
     "raised FileNotFoundError"),
    ("data-no-function", ["run", "{t}/good.toml", "--set", "data.name='mine.data:absent'"],
     "data.name"),
    ("data-option", ["run", "{t}/good.toml", "--set", "data.name='mine.data:three'", "--set",
                     "data.options={size=3}"], "data.options.size"),
    ("loss-scalar", ["run", "{t}/good.toml", "--set", "train.loss='mine.losses:mean_loss'"],
     "expected a tensor of shape (2,)"),
    ("loss-dtype", ["run", "{t}/good.toml", "--set", "train.loss='mine.losses:wrong_dtype'"],
     "expected floats"),
    ("loss-missing", ["run", "{t}/good.toml", "--set", "train.loss='mine.losses:absent'"],
     "train.loss"),
    ("sweep-user-path", ["sweep", "{t}/ok.toml", "--set", "model.name='nosuch:build'"],
     "model.name"),
]

TRACKERS = [
    ("tb-file", ["run", "{t}/good.toml", "--track", "tensorboard={t}/notes.txt"],
     "notes.txt: is a file"),
    ("tb-under-file", ["run", "{t}/good.toml", "--track", "tensorboard={t}/notes.txt/tb"],
     "notes.txt is a file"),
    ("mlflow-scheme", ["run", "{t}/good.toml", "--track", "mlflow=ftp://host/x"], "ftp"),
    ("mlflow-sqlite-under-file", ["run", "{t}/good.toml", "--track",
                                  "mlflow=sqlite:///{t}/notes.txt/mlflow.db"], "notes.txt"),
    ("mlflow-sqlite-empty", ["run", "{t}/good.toml", "--track", "mlflow=sqlite:"],
     "sqlite:///path"),
    ("mlflow-folder-file", ["run", "{t}/good.toml", "--track", "mlflow={t}/notes.txt"],
     "notes.txt"),
    ("wandb-file", ["run", "{t}/good.toml", "--track", "wandb={t}/notes.txt"], "notes.txt"),
    ("track-kind", ["run", "{t}/good.toml", "--track", "comet"], "kind"),
    ("config-tracker-kind", ["run", "{t}/good.toml", "--set", "trackers=[{kind='neptune'}]"],
     "trackers[0].kind"),
    ("config-tracker-dest", ["run", "{t}/good.toml", "--set",
                             "trackers=[{kind='tensorboard', dest='{t}/notes.txt'}]"],
     "trackers[0].dest"),
    ("tracker-online", ["run", "{t}/good.toml", "--set",
                        "trackers=[{kind='mlflow', online=true}]"], "trackers[0].online"),
    ("tracker-twice", ["run", "{t}/good.toml", "--track", "tensorboard", "--track",
                       "tensorboard"], "the same tracker"),
    ("export-dest-file", ["export", "{run}", "--to", "tensorboard", "{t}/notes.txt"],
     "notes.txt"),
    ("export-mlflow-scheme", ["export", "{run}", "--to", "mlflow", "s3://bucket/x"], "s3"),
    ("sweep-track", ["sweep", "{t}/ok.toml", "--track", "wandb={t}/notes.txt/w"],
     "notes.txt"),
]

CASES = [("config", *c) for c in CONFIG] + [("cli", *c) for c in CLI] + [
    ("data", *c) for c in DATA] + [("grid", *c) for c in GRIDS] + [
    ("user", *c) for c in USER] + [("tracker", *c) for c in TRACKERS]


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory):
    """A store holding one finished run (built once, copied for each case)."""
    from conftest import small_config

    from sgdlab.store import Store
    from sgdlab.train import train

    root = tmp_path_factory.mktemp("seeded") / "store"
    run = train(small_config(**{"train.epochs": 1}), Store(root), progress=False)
    return root, run.id


def snapshot(root: Path) -> tuple:
    """Every file of the store (but SQLite's WAL side files) with its bytes, and the index
    rows that matter."""
    from sgdlab.store import Store

    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and not p.name.endswith(("-wal", "-shm"))
             and p.name != "index.sqlite"}
    store = Store(root)
    runs = store.runs()[["id", "status", "updated", "message"]].to_dict("records")
    n_metrics = len(store.metrics())
    store.close()
    return files, runs, n_metrics


def invoke(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out = capsys.readouterr()
    return code, out.err


def prepare(tmp: Path) -> None:
    (tmp / "good.toml").write_text(GOOD)
    (tmp / "broken.toml").write_text("[data\nname=")
    (tmp / "binary.toml").write_bytes(b"\xff\xfe\x00garbage\x80")
    (tmp / "section.toml").write_text("[optimizer]\nlr = 0.1\n")
    (tmp / "date.toml").write_text('[data]\nname = "mine.data:three"\n'
                                   "options = { when = 1979-05-27 }\n")
    for name, text in USER_MODULES.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    _data_files(tmp)
    _grids(tmp)


def test_the_table_is_large_and_covers_every_category_and_command():
    assert len({case[1] for case in CASES}) == len(CASES) >= 80
    for category in ("config", "cli", "data", "grid", "user", "tracker"):
        assert sum(c[0] == category for c in CASES) >= 5, category
    commands = {a for c in CASES for a in c[2] if not a.startswith(("{", "-"))}
    parser_commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert parser_commands <= commands
    sections = {a.split("=")[0].split(".")[0] for c in CASES for a in c[2] if "=" in a}
    assert {"data", "model", "optim", "train", "probes", "trackers", "seed", "device",
            "dtype", "name"} <= sections


@pytest.mark.parametrize("category, case, argv, expected", CASES, ids=[c[1] for c in CASES])
def test_bad_input(category, case, argv, expected, seeded_store, tmp_path, capsys,
                   monkeypatch):
    for kind in ("tensorboard", "mlflow", "wandb"):  # a destination is checked with its extra
        if kind in argv or f"{kind}=" in " ".join(argv) or f"'{kind}'" in " ".join(argv):
            pytest.importorskip(kind)
    source, run_id = seeded_store
    store = tmp_path / "store"
    shutil.copytree(source, store)
    monkeypatch.chdir(tmp_path)  # user modules (mine/) are found in the current folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "mine" or m.startswith("mine.")]:
        monkeypatch.delitem(sys.modules, name)  # each case imports its own folder's copy
    prepare(tmp_path)
    before = snapshot(store)
    argv = [a.replace("{t}", str(tmp_path)).replace("{run}", run_id) for a in argv]
    if "--store" not in argv:
        argv = ["--store", str(store), "-q", *argv]
    code, err = invoke(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("sgdlab: error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(store) == before
    assert not (tmp_path / "tb").exists() and not (tmp_path / "default-store").exists()


@pytest.mark.parametrize("argv, expected", [
    (["run", "{t}/good.toml", "--set", "optim.lr=0"], "optim.lr"),
    (["run", "{t}/good.toml", "--set", "model.name='mine.models:wrong_shape'"], "model.name"),
    (["sweep", "{t}/negative_lr.toml"], "product.optim.lr[1]"),
])
def test_bad_input_through_a_real_process(argv, expected, tmp_path):
    """The same guarantees for the installed entry point: no traceback from any layer."""
    prepare(tmp_path)
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    r = subprocess.run([sys.executable, "-m", "sgdlab.cli", "--store", str(tmp_path / "s"),
                        *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()
