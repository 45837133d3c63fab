"""Property: any schema-shaped config file (sections and fields of RunConfig, values of the
right type or not, in range or not, now and then an unknown key, probes and trackers)
either loads and validates, or fails with one ConfigError line; never another exception.

The generator writes valid TOML by construction (checked), so every example reaches field
validation rather than the TOML parser."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sgdlab import config as C  # noqa: E402
from sgdlab.errors import ConfigError  # noqa: E402
from sgdlab.train.validate import validate  # noqa: E402

VALID = {  # field -> values the field accepts
    "data.name": ["digits", "mnist1d", "gaussian-mixture", "teacher-student"],
    "model.name": ["mlp", "cnn"],
    "train.loss": list(C.LOSSES),
    "optim.name": list(C.OPTIMIZERS),
    "data.normalize": list(C.NORMALIZATIONS),
    "data.input_corruption": list(C.INPUT_CORRUPTIONS),
    "model.activation": list(C.ACTIVATIONS),
    "optim.lr_schedule.kind": ["constant", "cosine", "cyclic"],
    "optim.batch_schedule.kind": ["constant"],
    "device": ["auto", "cpu"],
    "dtype": ["float32", "float64"],
    "name": ["run", "a-b.c_d"],
    "group": ["", "g"],
    "data.root": [""], "data.file": [""],
}
INVALID = {  # field -> values of the right type that it refuses
    "data.name": ["imagenet", "nosuch_pkg.mod:loader", "not a path:"],
    "model.name": ["transformer", "nosuch_pkg.mod:build", ""],
    "train.loss": ["hinge", "nosuch_pkg.mod:loss"],
    "optim.name": ["adam"], "data.normalize": ["zscore"], "data.input_corruption": ["blur"],
    "model.activation": ["swish"], "optim.lr_schedule.kind": ["linear", "step"],
    "optim.batch_schedule.kind": ["cosine", "step"], "device": ["tpu"],
    "dtype": ["float16"], "name": ["a b", ""], "data.file": ["/nonexistent/x.npz"],
}
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
               max_size=12)
numbers = st.one_of(st.integers(-5, 3000), st.floats(-10, 10),
                    st.sampled_from([0, 0.0, 1, 1.0, 0.5, 1e-9, 1e9, math.nan, math.inf,
                                     -math.inf]))
anything = st.one_of(numbers, st.booleans(), text, st.lists(st.integers(-3, 30), max_size=4),
                     st.dictionaries(text, st.integers(), max_size=2))


@st.composite
def value_for(draw, dotted: str, hint):
    """Nine times in ten a value the field takes (of its type, in range); else a value of
    its type it refuses, or a value of any type."""
    good = draw(st.integers(0, 9)) > 0
    if good and dotted in VALID:
        return draw(st.sampled_from(VALID[dotted]))
    if good:
        if hint is bool:
            return draw(st.booleans())
        if hint is int:
            return draw(st.integers(0, 3))
        if hint is float:
            return draw(st.floats(0.01, 0.5))
        if typing.get_origin(hint) is list:
            return []
        if hint is str:
            return ""
        return {}
    if dotted in INVALID and draw(st.booleans()):
        return draw(st.sampled_from(INVALID[dotted]))
    if hint is int:
        return draw(st.one_of(st.integers(-5, 100000), anything))
    if hint is float:
        return draw(st.one_of(numbers, anything))
    return draw(anything)


@st.composite
def section(draw, cls, prefix: str) -> dict:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in ("probes", "trackers") or not draw(st.booleans()):
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out[f.name] = draw(section(hint, f"{prefix}{f.name}."))
        else:
            out[f.name] = draw(value_for(prefix + f.name, hint))
    if prefix == "" and "data" in out and "name" not in out["data"]:
        out["data"]["name"] = "digits"  # the default would generate MNIST-1D
    if draw(st.integers(0, 29)) == 0:
        out[draw(st.sampled_from(["nope", "lr", "epochs"]))] = draw(anything)
    return out


@st.composite
def configs(draw) -> dict:
    cfg = draw(section(C.RunConfig, ""))
    if draw(st.booleans()):
        cfg["probes"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["hessian", "weights", "loss", "gradient_noise",
                                      "nope"])},
            optional={"every": st.one_of(st.sampled_from(["epoch", "end", 5]),
                                         st.sampled_from([0, -1, "often"])),
                      "k": st.integers(0, 5), "n": st.integers(0, 500)}), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        cfg["trackers"] = draw(st.lists(st.fixed_dictionaries(
            {"kind": st.sampled_from([*C.TRACKERS, "comet"])},
            optional={"online": st.booleans(), "project": text}), max_size=2))
    return cfg


def key(k: str) -> str:
    return json.dumps(k, ensure_ascii=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(cfg: dict) -> str:
    lines = [f"{key(k)} = {toml_value(v)}" for k, v in cfg.items()
             if not isinstance(v, dict) and k not in ("probes", "trackers")]
    for name, value in cfg.items():
        if isinstance(value, dict):
            lines.append(f"[{key(name)}]")
            lines += [f"{key(k)} = {toml_value(v)}" for k, v in value.items()]
    for name in ("probes", "trackers"):
        for table in cfg.get(name, []):
            lines.append(f"[[{name}]]")
            lines += [f"{key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(cfg=configs())
def test_schema_shaped_configs_load_or_fail_in_one_line(cfg, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    text_ = to_toml(cfg)
    assert tomllib.loads(text_) is not None  # valid TOML: the example reaches the fields
    path.write_text(text_)
    try:
        loaded = validate(C.load_config(path))
    except ConfigError as exc:
        hypothesis.event("field error: " + str(exc).split(":")[0].split("[")[0])
        message = str(exc)
        assert message and "\n" not in message.strip() and "Traceback" not in message
        return
    hypothesis.event("loaded")
    assert isinstance(loaded, C.RunConfig)
    json.dumps(loaded.to_dict(), allow_nan=False)  # what the store will write
