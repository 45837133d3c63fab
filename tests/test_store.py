"""The store's index: runs, params, metrics, and many writers at once."""

import hashlib
import json
import math
import multiprocessing as mp
import pickle
import re
import sqlite3
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

import sgdlab.store.index as index_mod
import sgdlab.store.store as store_mod
from sgdlab.store import Store, StoreError

CONFIG = {"name": "mlp", "seed": 0, "optim": {"lr": 0.1, "momentum": None, "nesterov": False},
          "model": {"widths": [32, 32], "act": "relu"}, "extra": {}}


def test_store_alone_creates_nothing(tmp_path):
    store = Store(tmp_path / "s")
    assert store.runs().empty and store.find_runs() == [] and store.metrics().empty
    with pytest.raises(StoreError, match="no run 'x'"):
        store.get_run("x")
    assert not (tmp_path / "s").exists()


def test_default_root_from_env_and_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "env"))
    assert Store().root == tmp_path / "env"
    monkeypatch.delenv("SGDLAB_STORE")
    monkeypatch.chdir(tmp_path)
    assert Store().root == tmp_path / "sgdlab-runs"
    assert Store("rel").root == tmp_path / "rel"
    Store().create_run({}, name="a")
    assert (tmp_path / "sgdlab-runs" / "index.sqlite").is_file()


def test_create_get_prefix_ambiguous(store):
    a = store.create_run(CONFIG, name="my run/1", group="g")
    assert re.fullmatch(r"my_run_1-\d{8}-\d{6}-[0-9a-f]{4}", a.id)
    assert (a.status, a.name, a.group) == ("running", "my run/1", "g")
    assert a.path == store.root / "runs" / a.id and a.path.is_dir()
    b = store.create_run(CONFIG, name="other")
    assert store.get_run(a.id) == a and store.get_run("oth") == b
    store.create_run(CONFIG, name="other")
    with pytest.raises(StoreError, match="ambiguous"):
        store.get_run("oth")
    with pytest.raises(StoreError, match=r"no run 'nope' in .*store"):
        store.get_run("nope")


def test_run_ids_unique_when_clock_and_token_collide(store, monkeypatch):
    class Frozen:
        @staticmethod
        def now(tz=None):
            return datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

    tokens = iter(["abcd", "abcd", "abcd", "ef01"])
    monkeypatch.setattr(store_mod, "datetime", Frozen)
    monkeypatch.setattr(store_mod, "secrets", SimpleNamespace(token_hex=lambda n: next(tokens)))
    ids = [store.create_run({}, name="x").id for _ in range(2)]
    assert ids == ["x-20240102-030405-abcd", "x-20240102-030405-ef01"]


def test_config_round_trip_and_hash(store):
    run = store.create_run(CONFIG, name="c")
    assert run.config == CONFIG and store.get_run(run.id).config == CONFIG
    assert json.loads((run.path / "config.json").read_text()) == CONFIG
    canonical = json.dumps(CONFIG, sort_keys=True, separators=(",", ":"))
    assert run.config_hash == hashlib.sha256(canonical.encode()).hexdigest()
    reordered = store.create_run(dict(reversed(CONFIG.items())), name="c")
    other = store.create_run({**CONFIG, "seed": 1}, name="c")
    assert reordered.config_hash == run.config_hash != other.config_hash
    assert store.find_runs(config_hash=run.config_hash) == [run, reordered]
    with pytest.raises(TypeError, match="JSON"):
        store.create_run({"lr": math.nan}, name="bad")


def test_log_and_metrics_frame(store):
    a = store.create_run(CONFIG, name="a", group="g")
    b = store.create_run(CONFIG, name="b")
    for step in range(3):
        a.log(step, {"loss": 1.0 / (step + 1), "acc": step / 2}, epoch=step / 3)
    a.log(3, {"loss": math.nan, "acc": math.inf})
    a.log(2, {"loss": 0.25})  # logged again at a step: replaced
    b.log(0, {"loss": 9.0})
    df = store.metrics()
    assert list(df.columns) == ["run", "step", "epoch", "name", "value"] and len(df) == 9
    loss = a.metrics("loss")
    assert loss["step"].tolist() == [0, 1, 2, 3]
    assert loss["value"].tolist()[:3] == [1.0, 0.5, 0.25] and math.isnan(loss["value"].iloc[3])
    assert math.isnan(loss["epoch"].iloc[3]) and loss["epoch"].iloc[1] == pytest.approx(1 / 3)
    assert store.metrics(runs=[a.id], names=["acc"])["value"].iloc[-1] == math.inf
    assert set(store.metrics(group="g")["run"]) == {a.id}
    assert set(store.metrics(runs=["b"])["run"]) == {b.id}  # prefix
    assert store.metrics(names=[]).empty
    with pytest.raises(TypeError, match="'loss'"):
        a.log(4, {"loss": "high"})


@pytest.fixture
def grid(store):
    runs = {}
    for lr in (0.1, 0.2, 0.3):
        for opt in ("sgd", "adam"):
            cfg = {"optim": {"lr": lr, "name": opt, "wd": None if opt == "sgd" else 1e-4},
                   "amp": opt == "adam", "widths": [lr * 10, 1]}
            runs[lr, opt] = store.create_run(cfg, name=f"{opt}{lr}", group=opt)
    return runs


def test_filter_runs_by_params(store, grid):
    def ids(frame):
        return set(frame["id"])

    assert len(store.runs()) == 6
    assert ids(store.runs(**{"optim.lr": 0.1})) == {grid[0.1, "sgd"].id, grid[0.1, "adam"].id}
    assert ids(store.runs(**{"optim.lr": 0.1 + 0.2, "optim.name": "sgd"})) == {grid[0.3, "sgd"].id}
    assert len(store.runs(where={"optim.lr": [0.1, 0.2], "optim.name": ["adam"]})) == 2
    assert len(store.runs(where={"optim.wd": None})) == 3
    assert len(store.runs(amp=True)) == 3 and store.runs(amp=1).empty
    assert ids(store.runs(where={"widths": [[2.0, 1]]})) == {grid[0.2, "sgd"].id,
                                                             grid[0.2, "adam"].id}
    assert store.runs(**{"optim.lr": 0.5}).empty and store.runs(**{"no.such": 1}).empty
    assert store.runs(**{"optim.lr": "0.1"}).empty  # typed: a string is not a number
    frame = store.runs(group="sgd")
    assert len(frame) == 3 and frame["optim.lr"].tolist() == [0.1, 0.2, 0.3]
    assert {"id", "name", "group", "status", "created", "diverged_step", "message",
            "optim.name", "amp"} <= set(frame.columns)
    assert [r.id for r in store.find_runs(group="adam")] == list(store.runs(group="adam")["id"])


def test_status_transitions(store):
    run = store.create_run({}, name="s")
    created = run.updated
    time.sleep(0.002)
    run.set_status("diverged", message="loss is nan", diverged_step=120)
    assert (run.status, run.message, run.diverged_step) == ("diverged", "loss is nan", 120)
    assert run.updated > created
    row = store.runs().iloc[0]
    assert row["status"] == "diverged" and row["diverged_step"] == 120
    run.set_status("running")
    assert (run.status, run.message, run.diverged_step) == ("running", None, None)
    run.set_status("finished")
    assert store.find_runs(status="finished") == [run] and store.find_runs(status="failed") == []
    with pytest.raises(ValueError, match="status"):
        run.set_status("done")
    assert run.status == "finished"


def test_delete_run(store):
    keep, gone = store.create_run({}, name="keep"), store.create_run({}, name="gone")
    gone.log(0, {"x": 1.0})
    keep.log(0, {"x": 2.0})
    store.delete_run(gone.id)
    assert not gone.path.exists() and store.find_runs() == [keep]
    assert set(store.metrics()["run"]) == {keep.id}
    with pytest.raises(StoreError, match=gone.id):
        gone.log(1, {"x": 1.0})
    with pytest.raises(StoreError, match="no run"):
        store.delete_run(gone.id)


def test_store_and_run_pickle(store):
    run = store.create_run({"a": 1}, name="p")
    store.find_runs()  # open a connection first
    again = pickle.loads(pickle.dumps(run))
    assert again == run and again.status == "running"


def test_write_waits_for_a_lock_then_succeeds(store, monkeypatch):
    run = store.create_run({}, name="l")
    monkeypatch.setattr(index_mod, "BUSY_TIMEOUT_S", 0.01)  # leave the waiting to our retries
    store.close()
    holder = sqlite3.connect(store.root / "index.sqlite", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, holder.execute, ["COMMIT"]).start()
    start = time.monotonic()
    run.log(0, {"x": 1.0})
    assert time.monotonic() - start > 0.2 and len(store.metrics()) == 1
    holder.close()


def test_write_gives_up_after_deadline(store, monkeypatch):
    run = store.create_run({}, name="l")
    monkeypatch.setattr(index_mod, "BUSY_TIMEOUT_S", 0.01)
    monkeypatch.setattr(index_mod, "LOCK_DEADLINE_S", 0.2)
    store.close()
    holder = sqlite3.connect(store.root / "index.sqlite", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="index.sqlite stayed locked"):
        run.log(0, {"x": 1.0})
    holder.close()


N_WORKERS, N_RUNS, N_STEPS = 4, 2, 500  # 2 metrics per step: 2,000 rows per worker


def _writer(root, worker, barrier):
    store = Store(root)
    barrier.wait()
    for r in range(N_RUNS):
        run = store.create_run({"worker": worker, "r": r}, name=f"w{worker}", group="many")
        for step in range(N_STEPS):
            run.log(step, {"a": float(step), "b": float(-step)}, epoch=step / 100)
        run.set_status("finished")


def _check_all_rows(store, n_runs):
    runs = store.find_runs(group="many")
    assert len(runs) == n_runs and all(r.status == "finished" for r in runs)
    df = store.metrics(group="many")
    assert len(df) == n_runs * N_STEPS * 2
    for _, part in df.groupby(["run", "name"]):
        assert part["step"].tolist() == list(range(N_STEPS))


def test_many_processes_write_one_store(store):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_WORKERS)
    procs = [ctx.Process(target=_writer, args=(store.root, w, barrier)) for w in range(N_WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * N_WORKERS
    _check_all_rows(store, N_WORKERS * N_RUNS)


def test_many_threads_write_one_store(store):
    barrier = threading.Barrier(N_WORKERS)
    errors = []

    def target(w):
        try:
            _writer(store.root, w, barrier)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(w,)) for w in range(N_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_all_rows(store, N_WORKERS * N_RUNS)


def _forked_child(store, run_id):
    store.get_run(run_id).log(1, {"x": 1.0})


def test_fork_child_and_parent_keep_writing(store):
    run = store.create_run({}, name="f")
    run.log(0, {"x": 0.0})  # the parent has a connection before the fork
    child = mp.get_context("fork").Process(target=_forked_child, args=(store, run.id))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    run.log(2, {"x": 2.0})
    assert run.metrics()["step"].tolist() == [0, 1, 2]


def test_connection_of_another_process_is_never_reused(store):
    run = store.create_run({}, name="f")
    local = store._index._local
    inherited = local.conn
    local.pid = -1  # as if this connection had been opened before a fork
    run.log(0, {"x": 0.0})
    assert local.conn is not inherited and inherited in index_mod._orphans
