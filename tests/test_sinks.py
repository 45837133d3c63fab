"""Sinks: an extra sink sees exactly what the store records, and the end of every run."""

import math

import pytest
from conftest import small_config

from sgdlab.sinks import Sink, Sinks
from sgdlab.train import loop, resume, train


class Recorder(Sink):
    def __init__(self):
        self.calls, self.metrics, self.arrays = [], {}, {}

    def start(self, run, step):
        self.calls.append(("start", step))
        self.run = run
        self.metrics = {k: v for k, v in self.metrics.items() if k[0] <= step}

    def log(self, records):
        for step, _epoch, metrics in records:
            for name, value in metrics.items():
                self.metrics[(step, name)] = value

    def log_arrays(self, name, step, arrays):
        self.arrays[(name, step)] = arrays

    def flush(self):
        self.calls.append(("flush",))

    def end(self, status, step, message=None):
        self.calls.append(("end", status, step, message))

    def close(self):
        self.calls.append(("close",))


def stored(store, run_id):
    m = store.metrics(runs=[run_id])
    return {(int(s), n): v for s, n, v in zip(m["step"], m["name"], m["value"])}


def same(a, b):
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_an_extra_sink_sees_what_the_store_records(store):
    sink = Recorder()
    cfg = small_config(probes=[{"name": "hessian", "k": 2, "n": 64}])
    run = train(cfg, store, sinks=[sink])
    assert sink.run.id == run.id and sink.run.config == run.config
    assert same(sink.metrics, stored(store, run.id))
    assert {name for name, _ in sink.arrays} == {"hessian"}
    assert sink.calls[0] == ("start", 0)
    assert sink.calls[-2:] == [("end", "finished", run.checkpoint_steps()[-1], None), ("close",)]
    assert sink.calls.count(("flush",)) >= 3  # each checkpoint and the end


def test_a_resumed_run_restarts_its_sinks_at_the_checkpoint(store, monkeypatch):
    real = loop.Trainer.evaluate
    calls = {"n": 0}

    def crash_on_third_evaluation(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut")
        return real(self)

    monkeypatch.setattr(loop.Trainer, "evaluate", crash_on_third_evaluation)
    sink = Recorder()
    with pytest.raises(RuntimeError, match="power cut"):
        train(small_config(), store, sinks=[sink])
    assert sink.calls[-2:] == [("end", "failed", sink.calls[-2][2], "RuntimeError: power cut"),
                               ("close",)]
    monkeypatch.setattr(loop.Trainer, "evaluate", real)
    run = store.runs()["id"][0]
    checkpoint = store.get_run(run).checkpoint_steps()[-1]
    again = resume(store, run, sinks=[sink])
    assert ("start", checkpoint) in sink.calls and again.status == "finished"
    assert same(sink.metrics, stored(store, run))


def test_a_diverged_run_ends_its_sinks_diverged(store):
    sink = Recorder()
    run = train(small_config(**{"optim.lr": 1e4, "train.loss": "mse"}), store, sinks=[sink])
    assert run.status == "diverged"
    assert sink.calls[-2:] == [("end", "diverged", run.diverged_step,
                                f"non-finite loss at step {run.diverged_step}"), ("close",)]


def test_every_sink_is_closed_even_when_one_fails_to_close():
    class Broken(Sink):
        def close(self):
            raise OSError("disk gone")

    last = Recorder()
    with pytest.raises(OSError, match="disk gone"):
        Sinks([Broken(), last]).close()
    assert last.calls == [("close",)]
    with pytest.raises(TypeError, match="sgdlab.sinks.Sink"):
        Sinks([object()])
