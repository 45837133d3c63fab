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
from sgdlab.probes import PROBES  # noqa: E402
from sgdlab.train.validate import validate  # noqa: E402

CHOICES = {
    "data.name": [*C.DATASETS, "nosuch_pkg.mod:loader", "not a path:", "imagenet"],
    "model.name": ["mlp", "cnn", "resnet20", "transformer", "nosuch_pkg.mod:build", ""],
    "train.loss": [*C.LOSSES, "hinge", "nosuch_pkg.mod:loss"],
    "optim.name": [*C.OPTIMIZERS, "adam"],
    "data.normalize": [*C.NORMALIZATIONS, "zscore"],
    "data.input_corruption": [*C.INPUT_CORRUPTIONS, "blur"],
    "model.activation": [*C.ACTIVATIONS, "swish"],
    "optim.lr_schedule.kind": [*C.LR_SCHEDULES, "linear"],
    "optim.batch_schedule.kind": [*C.BATCH_SCHEDULES, "cosine"],
    "device": ["auto", "cpu", "cuda:0", "tpu"],
    "dtype": ["float32", "float64", "float16"],
    "name": ["run", "a-b.c_d", "a b", ""],
    "kind": [*C.TRACKERS, "comet"],
}
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
               max_size=12)
numbers = st.one_of(st.integers(-5, 3000), st.floats(-10, 10, allow_nan=True,
                                                      allow_infinity=True),
                    st.sampled_from([0, 0.0, 1, 1.0, 0.5, 1e-9, 1e9]))
anything = st.one_of(numbers, st.booleans(), text, st.lists(st.integers(-3, 30), max_size=4))


def value_for(dotted: str, hint) -> st.SearchStrategy:
    """Mostly values of the field's type (in and out of range), sometimes any value."""
    short = dotted.rsplit(".", 1)[-1] if dotted.rsplit(".", 1)[-1] == "kind" and \
        dotted.startswith("trackers") else dotted
    if short in CHOICES:
        right = st.sampled_from(CHOICES[short])
    elif hint is bool:
        right = st.booleans()
    elif hint is int:
        right = st.integers(-3, 3000)
    elif hint is float:
        right = numbers
    elif hint is str:
        right = text
    elif typing.get_origin(hint) is list:
        right = st.lists(st.integers(-2, 40), max_size=4)
    elif hint is dict:
        right = st.dictionaries(st.sampled_from(["n", "width", "length"]), numbers, max_size=2)
    else:
        right = anything
    return st.one_of(right, right, right, anything)


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
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.sampled_from(["nope", "lr", "epochs"]))] = draw(anything)
    return out


@st.composite
def configs(draw) -> dict:
    cfg = draw(section(C.RunConfig, ""))
    if draw(st.booleans()):
        cfg["probes"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from([*PROBES, "nope"])},
            optional={"every": st.one_of(st.sampled_from(["epoch", "end", 0, 5, -1]), text),
                      "k": st.integers(-1, 5), "n": st.integers(-1, 500),
                      "tol": numbers, "extra": anything}), max_size=3))
    if draw(st.integers(0, 3)) == 0:
        cfg["trackers"] = draw(st.lists(st.fixed_dictionaries(
            {"kind": st.sampled_from(CHOICES["kind"])},
            optional={"online": st.booleans(), "project": text}), max_size=2))
    return cfg


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
        return json.dumps(v, ensure_ascii=True)  # JSON string escapes are valid TOML
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(cfg: dict) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in cfg.items()
             if not isinstance(v, dict) and k not in ("probes", "trackers")]
    for key, value in cfg.items():
        if isinstance(value, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()]
    for key in ("probes", "trackers"):
        for table in cfg.get(key, []):
            lines.append(f"[[{key}]]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
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
        message = str(exc)
        assert message and "\n" not in message.strip() and "Traceback" not in message
        return
    assert isinstance(loaded, C.RunConfig)
    json.dumps(loaded.to_dict(), allow_nan=False)  # what the store will write
