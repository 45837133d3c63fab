"""Trackers: what TensorBoard, MLflow and W&B (offline) hold, read back with each one's own
reader, equals the store, value for value, for a run fed live and for runs exported
afterwards (`sgdlab export`). Each test skips when its extra is absent."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import small_config

from sgdlab import cli
from sgdlab.config import TrackerConfig
from sgdlab.train import train

PROBES = [{"name": "hessian", "k": 2, "n": 64, "every": 10}]


def stored(store, run_id) -> dict[tuple[int, str], float]:
    m = store.metrics(runs=[run_id])
    return {(int(s), n): float(v) for s, n, v in zip(m["step"], m["name"], m["value"])}


def equal(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.fixture
def two_runs(store):
    """A finished run with probe arrays and a diverged one (a non-finite loss)."""
    done = train(small_config(probes=PROBES), store, progress=False)
    bad = train(small_config(**{"optim.lr": 1e4, "train.loss": "mse", "train.epochs": 1}),
                store, progress=False)
    assert (done.status, bad.status) == ("finished", "diverged")
    values = stored(store, bad.id).values()
    assert any(not math.isfinite(v) for v in values)  # the export carries inf or NaN
    return done, bad


def export(store, runs, kind, dest, capsys):
    code = cli.main(["--store", str(store.root), "export", *[r.id for r in runs],
                     "--to", kind, str(dest)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert [line.split("\t")[0] for line in out.out.splitlines()] == [r.id for r in runs]


# -- TensorBoard ---------------------------------------------------------------------------
def tensorboard_scalars(folder) -> dict[tuple[int, str], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0,
                                                        "tensors": 0})
    acc.Reload()
    return {(e.step, tag): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}


def check_tensorboard(store, run, folder) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    want = stored(store, run.id)
    got = tensorboard_scalars(folder)
    assert got.keys() == want.keys()
    for key, value in want.items():  # TensorBoard scalars are float32
        assert equal(got[key], float(np.float32(value))), key
    acc = EventAccumulator(str(folder), size_guidance={"histograms": 0, "tensors": 0})
    acc.Reload()
    if run.array_names():
        steps = run.array_steps("hessian")
        assert [e.step for e in acc.Histograms("hessian/eigenvalues")] == steps
    texts = acc.Tensors("status/text_summary")
    status = texts[-1].tensor_proto.string_val[0].decode()
    assert status.startswith(run.status)


def test_tensorboard_live_and_export(store, two_runs, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    done, bad = two_runs
    live = train(small_config(probes=PROBES, trackers=[{"kind": "tensorboard"}]), store,
                 progress=False)
    check_tensorboard(store, live, store.root / "tensorboard" / live.id)  # the default place
    export(store, [done, bad], "tensorboard", tmp_path / "tb", capsys)
    for run in (done, bad):
        check_tensorboard(store, run, tmp_path / "tb" / run.id)


# -- MLflow --------------------------------------------------------------------------------
def check_mlflow(store, run, uri, experiment) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    (found,) = client.search_runs([exp.experiment_id], f"tags.`sgdlab.run_id` = '{run.id}'")
    want = stored(store, run.id)
    got = {}
    for key in found.data.metrics:
        for m in client.get_metric_history(found.info.run_id, key):
            got[(m.step, key)] = m.value
    assert got.keys() == want.keys()
    biggest = sys.float_info.max  # MLflow keeps ±inf as the largest float64
    for key, value in want.items():
        expected = math.copysign(biggest, value) if math.isinf(value) else value
        assert equal(got[key], expected), key
    assert found.data.params["optim.lr"] == str(run.config["optim"]["lr"])
    assert found.data.tags["sgdlab.status"] == run.status
    assert found.info.status == ("FINISHED" if run.status == "finished" else "FAILED")
    if run.array_names():
        listed = client.list_artifacts(found.info.run_id, "arrays/hessian")
        assert len(listed) == len(run.array_steps("hessian"))


def test_mlflow_live_and_export(store, two_runs, tmp_path, capsys):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    done, bad = two_runs
    folder = tmp_path / "mlflow"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    live = train(small_config(probes=PROBES, trackers=[{"kind": "mlflow", "dest": str(folder),
                                                        "project": "live"}]), store,
                 progress=False)
    check_mlflow(store, live, uri, "live")
    export(store, [done, bad], "mlflow", uri, capsys)  # the same store, by URI
    for run in (done, bad):
        check_mlflow(store, run, uri, "sgdlab")


# -- W&B offline -------------------------------------------------------------------------
def wandb_records(path):
    """The records of an offline run's ``.wandb`` file: W&B's public protobuf messages
    (``wandb.proto.wandb_internal_pb2.Record``) in its LevelDB-style log (7-byte file
    header, 32 KiB blocks, 7-byte record headers: crc32, length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks, block = 7, [], 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            return
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def check_wandb(store, run, folder) -> None:
    import json

    from sgdlab.sinks.wandb_sink import wandb_id

    (path,) = folder.glob(f"wandb/offline-run-*-{wandb_id(run.id)}/*.wandb")
    deadline = time.monotonic() + 60  # wandb-core finishes writing the file on its own
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
        assert time.monotonic() < deadline, f"{path} has no exit record"
        time.sleep(0.2)
    got, config, summary = {}, {}, {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            step = row.pop("_step")
            for name, value in row.items():
                if not name.startswith("_"):
                    got[(step, name)] = float(value)
        elif kind == "run":
            assert record.run.run_id == wandb_id(run.id) and record.run.display_name == run.id
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "summary":
            summary.update({u.key: json.loads(u.value_json) for u in record.summary.update})
    want = stored(store, run.id)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert equal(got[key], value), key
    optim = config["optim"]
    assert optim.get("value", optim) == run.config["optim"]  # with or without W&B's wrapper
    assert summary["sgdlab/status"] == run.status


def test_wandb_offline_live_and_export(store, two_runs, tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-default"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    done, bad = two_runs
    live = train(small_config(probes=PROBES, trackers=[{"kind": "wandb",
                                                        "dest": str(tmp_path / "live")}]),
                 store, progress=False)
    check_wandb(store, live, tmp_path / "live")
    export(store, [done, bad], "wandb", tmp_path / "wb", capsys)
    for run in (done, bad):
        check_wandb(store, run, tmp_path / "wb")
    # W&B's own tool sees the offline runs, ready for `wandb sync` (no account needed here)
    r = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run",
                        str(tmp_path / "wb" / "wandb")], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_trackers_are_not_part_of_a_runs_identity():
    from sgdlab.store import config_hash

    a = small_config().to_dict()
    b = small_config(trackers=[{"kind": "tensorboard", "dest": "x"}]).to_dict()
    assert a != b and config_hash(a) == config_hash(b)
    older = {k: v for k, v in a.items() if k != "trackers"}  # a run stored before trackers
    older["data"] = {k: v for k, v in a["data"].items() if k != "options"}  # and options
    older["model"] = {k: v for k, v in a["model"].items() if k != "options"}
    older["train"] = {k: v for k, v in a["train"].items()  # and the evaluation cadence
                      if k not in ("eval_epochs", "eval_splits", "input_noise")}
    assert config_hash(older) == config_hash(a)  # an older store's sweep still skips it
    c = small_config(**{"model.name": "x.y:z", "model.options": {"w": 2}}).to_dict()
    assert config_hash(c) != config_hash({**c, "model": {**c["model"], "options": {}}})
    assert config_hash({**a, "train": {**a["train"], "eval_epochs": 2}}) != config_hash(a)
    assert config_hash({**a, "train": {**a["train"], "eval_splits": ["test"]}}) != config_hash(a)
    assert config_hash({**a, "train": {**a["train"], "input_noise": 0.1}}) != config_hash(a)
    assert TrackerConfig(kind="wandb").online is False  # offline unless asked


def test_a_sweep_tracks_every_run_from_its_worker(tmp_path):
    """`--track` on a sweep: each worker process opens the tracker for its own runs."""
    pytest.importorskip("tensorboard")
    import os

    from sgdlab.store import Store

    grid = tmp_path / "g.toml"
    grid.write_text('name = "tracked"\n[base]\ndata = { name = "digits" }\n'
                    'model = { name = "mlp", depth = 1, width = 16 }\ntrain = { epochs = 1 }\n'
                    '[product]\n"optim.lr" = [0.05, 0.1]\n')
    store = tmp_path / "store"
    r = subprocess.run([sys.executable, "-m", "sgdlab.cli", "--store", str(store), "-q", "sweep",
                        str(grid), "--workers", "2", "--track", f"tensorboard={tmp_path / 'tb'}"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    s = Store(store)
    runs = s.find_runs(group="tracked")
    assert len(runs) == 2
    for run in runs:
        assert run.config["trackers"][0]["kind"] == "tensorboard"
        got = tensorboard_scalars(tmp_path / "tb" / run.id)
        want = stored(s, run.id)
        assert got.keys() == want.keys()
        assert all(equal(got[k], float(np.float32(v))) for k, v in want.items())


def test_a_sweep_keeps_a_tracker_destination_as_given(tmp_path):
    """`--track KIND=DEST` reaches each run's config as DEST, whatever its characters (the
    sweep once wrote it into TOML through JSON escapes, which TOML refuses for characters
    outside the BMP, and the value silently became a string)."""
    pytest.importorskip("tensorboard")
    from sgdlab.store import Store

    grid = tmp_path / "g.toml"
    grid.write_text('name = "dest"\n[base]\ndata = { name = "digits" }\n'
                    'model = { name = "mlp", depth = 1, width = 8 }\ntrain = { epochs = 1 }\n')
    dest = tmp_path / "tb \U0001F600 \"quoted\" \\ é"
    r = subprocess.run([sys.executable, "-m", "sgdlab.cli", "--store", str(tmp_path / "st"),
                        "-q", "sweep", str(grid), "--track", f"tensorboard={dest}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (run,) = Store(tmp_path / "st").find_runs(group="dest")
    assert run.config["trackers"] == [{"kind": "tensorboard", "dest": str(dest), "project": "",
                                        "online": False}]
    assert (dest / run.id).is_dir()


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    import importlib.util

    from sgdlab.errors import ConfigError
    from sgdlab.sinks import trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"trackers\[0\].kind: wandb needs its extra: "
                                          r"pip install 'sgdlab\[wandb\]'"):
        trackers.check_trackers([TrackerConfig(kind="wandb")])
