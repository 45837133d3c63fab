"""The experiment framework: outputs, rerun skips finished runs, bad overrides fail early."""

import json

import pytest

from sgdlab.errors import ConfigError
from sgdlab.experiments import EXPERIMENTS, Check, Experiment, run_experiment, verdict
from sgdlab.experiments.base import build_configs, default_names


class Fake(Experiment):
    name = "fake"
    title = "A fake experiment"
    reference = "Nobody, 2024"

    def configs(self, scale):
        base = {"data": {"name": "digits", "n_train": 256, "n_test": 128},
                "model": {"name": "mlp", "depth": 1, "width": 8},
                "optim": {"batch_size": 64}, "train": {"epochs": 1}}
        return [{**base, "optim": {"batch_size": 64, "lr": lr}} for lr in (0.05, 0.1)]

    def analyze(self, ctx):
        from sgdlab.report.figures import new_figure

        assert list(ctx.runs["point"]) == [0, 1]
        acc = ctx.final("test/acc")
        fig, ax = new_figure()
        for run_id in ctx.runs["id"]:
            s = ctx.series(run_id, "train/batch_loss")
            ax.plot(s["step"], s["value"])
        (ctx.extra_dir / "cache.txt").write_text("x")
        loss = ctx.final("train/loss")
        return [Check("accuracy is above chance (> 0.1)", f"{acc.min():.3f}",
                      verdict(bool(acc.min() > 0.1)), acc.min()),
                Check("loss is positive", f"{loss.min():.3g}", verdict(bool(loss.min() > 0)))], [
            ("Batch loss", fig), ("Batch loss", fig)]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(EXPERIMENTS, "fake", Fake())


def test_run_experiment_writes_report_and_skips_finished_runs(store, fake):
    result = run_experiment("fake", store, quiet=True)
    out = store.root / "experiments" / "fake-smoke"
    assert result.html_path == out / "report.html" and result.json_path == out / "checks.json"
    assert [p.name for p in result.figure_paths] == ["batch-loss.png", "batch-loss-2.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.figure_paths)
    html = result.html_path.read_text()
    assert "data:image/png;base64," in html and "accuracy is above chance" in html
    assert "fake-smoke_lr-0.05" in html  # configs and readable run names
    data = json.loads(result.json_path.read_text())
    assert data["scale"] == "smoke" and data["n_runs"] == 2 and data["torch"]
    assert [c["verdict"] for c in data["checks"]] == [c.verdict for c in result.checks]
    assert result.checks[1].verdict == "held"
    runs = store.runs(group="fake-smoke")
    assert sorted(runs["name"]) == ["fake-smoke_lr-0.05", "fake-smoke_lr-0.1"]
    assert set(runs["status"]) == {"finished"}

    stored = store.checks(experiment="fake", scale="smoke")  # the checks in the index too
    assert list(stored["claim"]) == [c.claim for c in result.checks]
    assert list(stored["verdict"]) == [c.verdict for c in result.checks]
    assert list(stored["measured"]) == [c.measured for c in result.checks]
    assert list(stored["ordinal"]) == [0, 1] and stored["value"].iloc[0] == result.checks[0].value

    again = run_experiment("fake", store, quiet=True)
    assert len(store.runs()) == 2 and sorted(again.run_ids) == sorted(result.run_ids)
    assert [c.measured for c in again.checks] == [c.measured for c in result.checks]
    rerun = store.checks()  # replaced, not appended
    assert len(rerun) == 2 and (rerun["created"] > stored["created"].max()).all()

    # an override makes new runs; the analysis sees only the runs of the current configs
    third = run_experiment("fake", store, overrides=["model.width=4"], quiet=True)
    assert len(store.runs()) == 4 and not set(third.run_ids) & set(result.run_ids)
    assert "model.width=4" in json.loads(third.json_path.read_text())["overrides"]


def test_bad_override_names_the_field_and_writes_nothing(store, fake):
    with pytest.raises(ConfigError, match="optim.lr: must be > 0"):
        run_experiment("fake", store, overrides=["optim.lr=-1"], quiet=True)
    with pytest.raises(ConfigError, match="model.widht: unknown key"):
        run_experiment("fake", store, overrides=["model.widht=3"], quiet=True)
    with pytest.raises(ConfigError, match=r"probes\[0\].name: 'nope'"):
        run_experiment("fake", store, overrides=['probes=[{name="nope"}]'], quiet=True)
    with pytest.raises(ConfigError, match="--scale"):
        run_experiment("fake", store, scale="huge", quiet=True)
    with pytest.raises(ConfigError, match="group"):
        build_configs(Fake(), "smoke", ["group=x"])
    assert not store.root.exists()


def test_unknown_experiment_and_check_verdicts(store):
    from sgdlab.errors import SgdlabError

    with pytest.raises(SgdlabError, match="unknown experiment 'nope'"):
        run_experiment("nope", store)
    with pytest.raises(ValueError):
        Check("c", "1", "maybe")
    assert [verdict(v) for v in (True, False, None)] == ["held", "not held", "inconclusive"]


def test_default_names_use_the_varying_keys():
    names = default_names("g", [{"optim": {"lr": 0.1, "batch_size": 32}, "seed": 0},
                                {"optim": {"lr": 0.2, "batch_size": 32}, "seed": 0}])
    assert names == ["g_lr-0.1", "g_lr-0.2"]
    assert default_names("g", [{}]) == ["g_0"]


def test_cli_lists_and_runs(store, fake, capsys):
    import argparse

    from sgdlab.experiments.cli import add_experiment_commands

    parser = argparse.ArgumentParser()
    parser.add_argument("--store")
    parser.add_argument("--quiet", action="store_true")
    add_experiment_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--quiet", "experiment", "--list"])
    assert args.func(args) == 0 and "fake" in capsys.readouterr().out
    args = parser.parse_args(["--store", str(store.root), "--quiet", "experiment", "fake"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "checks.json" in out and "held" in out


def test_devices_come_from_the_environment_record_else_the_config(store, tmp_path):
    from conftest import small_config

    from sgdlab.experiments.base import AnalysisContext
    from sgdlab.train import train

    run = train(small_config(), store)  # device "auto", trained on this CPU
    ctx = AnalysisContext(store, "smoke", store.runs(), tmp_path)
    assert ctx.devices(run.id) == {"cpu"}
    (run.path / "environment.json").unlink()  # a run from before the record existed
    assert ctx.devices(run.id) == set()  # "auto": unknown
    explicit = store.create_run({"device": "cpu"}, name="old")
    assert ctx.devices(explicit.id) == {"cpu"}


class Computed(Experiment):
    """An experiment that trains nothing: its analysis computes and checks by itself."""

    name = "computed"
    title = "A computed experiment"
    scales = ("smoke", "cpu")

    def configs(self, scale):
        return []

    def analyze(self, ctx):
        assert ctx.runs.empty and ctx.configs == []
        return [Check("two plus two is four", "4", verdict(2 + 2 == 4), 4.0)], []


def test_an_experiment_without_runs_trains_nothing_and_still_reports(store):
    result = run_experiment(Computed(), store, scale="cpu", quiet=True)
    assert result.run_ids == [] and [c.verdict for c in result.checks] == ["held"]
    assert json.loads(result.json_path.read_text())["n_runs"] == 0
    assert len(store.runs()) == 0 and list(store.checks()["experiment"]) == ["computed"]
