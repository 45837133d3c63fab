"""The store's table of experiment checks: write, replace, filter, and the migration from
schema version 1."""

import math
import sqlite3
from types import SimpleNamespace

from sgdlab.store import Store


def _check(claim, verdict="held", value=None):
    return SimpleNamespace(claim=claim, measured=f"measured {claim}", verdict=verdict,
                           value=value)


def test_checks_are_written_replaced_and_filtered(store):
    assert store.checks().empty and list(store.checks().columns) == [
        "experiment", "scale", "ordinal", "created", "claim", "measured", "verdict", "value"]
    assert not store.root.exists()  # reading creates nothing
    store.write_checks("b", "smoke", [_check("b1", value=1.5), _check("b2", "not held", math.nan)])
    store.write_checks("a", "smoke", [_check("a1", "inconclusive")])
    store.write_checks("a", "paper", [_check("p1")])
    frame = store.checks()
    assert list(zip(frame["experiment"], frame["scale"], frame["ordinal"])) == [
        ("a", "paper", 0), ("a", "smoke", 0), ("b", "smoke", 0), ("b", "smoke", 1)]
    b = store.checks(experiment="b")
    assert list(b["claim"]) == ["b1", "b2"] and list(b["verdict"]) == ["held", "not held"]
    assert b["value"].iloc[0] == 1.5 and math.isnan(b["value"].iloc[1])
    assert b["measured"].iloc[0] == "measured b1" and str(b["created"].dt.tz) == "UTC"
    assert len(store.checks(scale="smoke")) == 3
    assert len(store.checks(experiment=["a", "b"], scale=["paper"])) == 1

    first = b["created"].iloc[0]
    store.write_checks("b", "smoke", [_check("b3", "inconclusive")])  # a rerun replaces
    b = store.checks(experiment="b", scale="smoke")
    assert list(b["claim"]) == ["b3"] and list(b["ordinal"]) == [0]
    assert b["created"].iloc[0] > first
    assert len(store.checks(experiment="a")) == 2  # other experiments and scales untouched
    store.write_checks("b", "smoke", [])
    assert store.checks(experiment="b").empty


def test_index_of_schema_version_1_is_migrated(tmp_path):
    old = Store(tmp_path / "s")
    run = old.create_run({"a": 1}, name="r")
    run.log(0, {"x": 1.0})
    old.close()
    path = tmp_path / "s" / "index.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE checks")
    conn.execute("UPDATE schema_version SET version = 1")
    conn.close()

    store = Store(tmp_path / "s")
    assert store.checks().empty and store.find_runs() == [run]
    store.write_checks("e", "smoke", [_check("c")])
    assert list(store.checks()["claim"]) == ["c"] and len(store.metrics()) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    conn.close()
