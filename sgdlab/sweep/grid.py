"""Grid files: a base config and lists of values, expanded into validated run configs.

A grid is a TOML file (or the same dict)::

    name = "lr-sweep"          # group of the runs (default: the grid file's stem)
    base = "mlp.toml"          # a config file, relative to the grid file
    seeds = [0, 1, 2]          # shorthand for a product over `seed` (keys before any [table])

    [product]                  # cartesian product of every list
    "optim.lr" = [0.01, 0.1, 1.0]
    model.width = [64, 256]    # unquoted dotted keys (nested tables) work as well

    [[zip]]                    # equal-length lists taken together, then producted with the rest
    "optim.lr_schedule.kind" = ["constant", "cosine"]
    "train.epochs" = [10, 20]

``base`` is a file name or an inline ``[base]`` table of config fields; a table may name a
file with ``include = "mlp.toml"`` and put its own fields on top. Extra dotted overrides
(``--set``) go to the grid when their first part is a grid key (``seeds=[0, 1]``,
``product.optim.lr=[0.1, 0.2]``, ``base.train.epochs=5``) and to the base config otherwise
(``train.epochs=5``; setting a swept field is an error).

Points are ordered by product keys, then zip groups, then seeds (the innermost axis). Each
point becomes a :class:`~sgdlab.config.RunConfig` with ``group`` = the sweep name and
``name`` = the sweep name + ``key-value`` of its swept fields (``lr-sweep_lr-0.1_seed-0``,
characters ``[A-Za-z0-9_.-]``, at most 80, a hash suffix if cut). Every point is validated
before anything runs; the first error is one :class:`ConfigError` naming the grid and the
field, e.g. ``grid.toml: product.optim.lr[2]: must be > 0, got -1.0``. Two points that
resolve to the same config are an error too, so no two workers ever train the same point.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdlab.config import RunConfig, apply_overrides, from_dict, parse_override, read_config_file
from sgdlab.errors import ConfigError

# Validates configs at once: per config, the validated config or its error message.
Validator = Callable[[list[RunConfig]], list["RunConfig | str"]]

GRID_KEYS = ("name", "base", "seeds", "product", "zip")
RESERVED = ("name", "group")  # set by the sweep, never swept
MAX_NAME = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Sweep:
    """An expanded grid: its name (the runs' group), one config per point, and the
    swept dotted keys with each point's values (``points[i][key]``)."""

    name: str
    configs: list[RunConfig]
    swept: list[str] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    source: str = "grid"


@dataclass
class _Axis:
    """One independent axis of the grid: a product key, a zip group, or the seeds."""

    label: str  # "product", "zip[1]", "seeds"
    keys: list[str]
    values: list[tuple]  # one tuple (a value per key) per position

    def where(self, key: str, i: int) -> str:
        return f"seeds[{i}]" if self.label == "seeds" else f"{self.label}.{key}[{i}]"


def load_grid(path: str | Path, overrides: list | dict[str, Any] | None = None,
              validate: Validator | None = None) -> Sweep:
    """Read a TOML grid file and expand it (see the module docstring; ``validate``: as in
    :func:`make_sweep`)."""
    path = Path(path)
    grid = read_config_file(path, "grid")
    grid.setdefault("name", _UNSAFE.sub("_", path.stem).strip(".-") or "sweep")
    return make_sweep(grid, path.parent, overrides, source=str(path), validate=validate)


def expand_grid(grid: dict, base_dir: str | Path = ".",
                overrides: list | dict[str, Any] | None = None,
                source: str = "grid") -> list[RunConfig]:
    """The validated configs of every point of ``grid`` (a dict shaped like a grid file)."""
    return make_sweep(grid, base_dir, overrides, source).configs


def make_sweep(grid: dict, base_dir: str | Path = ".",
               overrides: list | dict[str, Any] | None = None,
               source: str = "grid", validate: Validator | None = None) -> Sweep:
    """Like :func:`expand_grid`, returning the whole :class:`Sweep`.

    ``validate`` checks the points' configs at once (default: in this process, by
    :func:`sgdlab.train.validate.validate_configs`, which imports torch and the registries);
    a sweep on worker processes passes theirs, so that only the workers import torch."""
    if validate is None:
        from sgdlab.train.validate import validate_configs as validate
    def fail(msg: str) -> typing.NoReturn:
        raise ConfigError(f"{source}: {msg}")

    grid, config_overrides = _route_overrides(grid, overrides, fail)
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        fail(f"{unknown[0]}: unknown key (known: {', '.join(GRID_KEYS)})")
    name = grid.get("name", "sweep")
    if not isinstance(name, str) or not name or _UNSAFE.search(name) or name[0] in ".-":
        fail(f"name: {name!r} must be non-empty letters, digits, '_', '.', '-'")
    base = _base(grid.get("base", {}), Path(base_dir), fail)
    axes = _axes(grid, fail)
    swept = {key: axis for axis in axes for key in axis.keys}
    for key, value in config_overrides.items():
        if key in swept:
            fail(f"--set {key}: the grid sweeps this field ({swept[key].label})")
        base = apply_overrides(base, {key: value})

    short = _short_names(list(swept))
    expanded = []  # (point, where, its config or the error message of its fields)
    for combo in itertools.product(*(range(len(a.values)) for a in axes)):
        point, where = {}, {}
        for axis, i in zip(axes, combo):
            for key, value in zip(axis.keys, axis.values[i]):
                point[key], where[key] = value, axis.where(key, i)
        run_name = _run_name(name, [(short[k], v) for k, v in point.items()])
        data = apply_overrides(base, {**point, "name": run_name, "group": name})
        try:
            expanded.append((point, where, from_dict(data)))
        except ConfigError as exc:
            expanded.append((point, where, str(exc)))
    parsed = [c for *_, c in expanded if isinstance(c, RunConfig)]
    checked = iter(validate(parsed) if parsed else [])
    configs, points, seen = [], [], {}
    for point, where, cfg in expanded:
        if isinstance(cfg, RunConfig):
            cfg = next(checked)
        if isinstance(cfg, str):
            fail(_attribute(cfg, where, point, base, validate))
        key = json.dumps({**cfg.to_dict(), "name": ""}, sort_keys=True)
        if key in seen:
            fail(f"points {seen[key]} and {len(configs)} are the same run "
                 f"({_describe(point) or run_name}); remove the duplicate value")
        seen[key] = len(configs)
        configs.append(cfg)
        points.append(point)
    return Sweep(name, configs, list(swept), points, source)


# -- pieces ------------------------------------------------------------------------------
def _route_overrides(grid: dict, overrides, fail) -> tuple[dict, dict[str, Any]]:
    """Split ``--set`` overrides into grid edits (applied here) and base-config fields."""
    if not isinstance(grid, dict):
        fail(f"expected a table, got {grid!r}")
    grid = copy.deepcopy(grid)
    if isinstance(grid.get("base"), str):
        grid["base"] = {"include": grid["base"]}  # so that base.<field>=... works
    if isinstance(overrides, dict):
        items = overrides.items()
    else:  # "key=value" texts (--set), or (key, value) pairs of values already parsed
        items = (o if isinstance(o, tuple) else parse_override(o) for o in overrides or [])
    config = {}
    for key, value in items:
        head = key.split(".")[0]
        if head == "zip":
            fail(f"--set {key}: zipped lists can only be set in the grid file")
        if head == "group":
            fail(f"--set {key}: the group of a sweep's runs is its name (set name=...)")
        if head in GRID_KEYS:
            grid = apply_overrides(grid, {key: value})
        else:
            config[key] = value
    return grid, config


def _base(base: Any, base_dir: Path, fail) -> dict:
    """The base config dict: an included file, then the inline fields on top."""
    if isinstance(base, str):
        base = {"include": base}
    if not isinstance(base, dict):
        fail(f"base: expected a config file name or a table, got {base!r}")
    base = dict(base)
    include = base.pop("include", None)
    data = {}
    if include is not None:
        if not isinstance(include, str):
            fail(f"base.include: expected a file name, got {include!r}")
        try:
            data = read_config_file(base_dir / include)
        except ConfigError as exc:
            fail(f"base: {exc}")
    for key in RESERVED:
        data.pop(key, None)
        base.pop(key, None)
    fields = _flatten(base, "base", fail, leaf=lambda v: not isinstance(v, dict) or not v)
    return apply_overrides(data, fields)


def _axes(grid: dict, fail) -> list[_Axis]:
    axes: list[_Axis] = []
    owner: dict[str, str] = {}

    def add(label: str, table: Any) -> None:
        if not isinstance(table, dict):
            fail(f"{label}: expected a table of dotted fields to lists, got {table!r}")
        lists = _flatten(table, label, fail, leaf=lambda v: isinstance(v, list))
        if not lists:
            fail(f"{label}: no fields to sweep")
        for key, values in lists.items():
            where = f"{label}.{key}" if label != "seeds" else "seeds"
            if key in RESERVED:
                fail(f"{where}: '{key}' is set by the sweep and cannot be swept")
            _check_field(key, where, fail)
            if key in owner:
                fail(f"{where}: '{key}' is also swept in {owner[key]}")
            if not values:
                fail(f"{where}: empty list")
            owner[key] = label
        lengths = {k: len(v) for k, v in lists.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            fail(f"{label}: zipped lists must have equal lengths ({shown})")
        axes.append(_Axis(label, list(lists), list(zip(*lists.values()))))

    for key, values in _flatten(grid.get("product", {}), "product", fail,
                                leaf=lambda v: isinstance(v, list)).items():
        add("product", {key: values})
    zips = grid.get("zip", [])
    if not isinstance(zips, list):
        fail("zip: expected [[zip]] tables")
    for i, table in enumerate(zips):
        add(f"zip[{i}]", table)
    if "seeds" in grid:
        if not isinstance(grid["seeds"], list):
            fail(f"seeds: expected a list of integers, got {grid['seeds']!r}")
        add("seeds", {"seed": grid["seeds"]})
    return axes


def _flatten(table: dict, label: str, fail, leaf, prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys; every leaf must satisfy ``leaf`` (a list for sweeps)."""
    if not isinstance(table, dict):
        fail(f"{label}: expected a table, got {table!r}")
    out = {}
    for key, value in table.items():
        dotted = prefix + key
        if dotted in out:  # "optim.lr" quoted and optim.lr dotted in one table
            fail(f"{label}.{dotted}: given twice")
        if isinstance(value, dict) and value and not leaf(value):
            out.update(_flatten(value, label, fail, leaf, dotted + "."))
        elif leaf(value):
            out[dotted] = value
        else:
            fail(f"{label}.{dotted}: expected a list of values, got {value!r}")
    return out


def _check_field(key: str, where: str, fail) -> None:
    """Fail unless the dotted ``key`` names a field of :class:`RunConfig`."""
    cls: Any = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            fail(f"{where}: '{key}' is not a config field")
        known = typing.get_type_hints(cls)
        if part not in known:
            fail(f"{where}: unknown config field (known here: {', '.join(sorted(known))})")
        cls = known[part]


def _attribute(msg: str, where: dict[str, str], point: dict[str, Any], base: dict,
               validate: Validator) -> str:
    """Rewrite ``optim.lr: must be > 0`` as ``product.optim.lr[2]: must be > 0``; name the
    point when the error comes from it but not from a swept field (``optim.nesterov``)."""
    field_name, sep, rest = msg.partition(":")
    for key, label in where.items():
        if field_name == key or field_name.startswith((key + "[", key + ".")):
            return f"{label}{field_name[len(key):]}:{rest}" if sep else msg
    if not any(key in msg for key in point):
        try:
            alone = validate([from_dict(base)])[0]
        except ConfigError as exc:
            alone = str(exc)
        if alone == msg:  # the base (file, inline fields, --set) alone is wrong
            return msg
    return msg + (f" (at {_describe(point)})" if point else "")


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in point.items())


def _short_names(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, or the whole key where two last parts clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}".replace("+", "")
    if isinstance(value, list):
        return "-".join(_format(v) for v in value) or "none"
    if isinstance(value, dict):
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    return str(value)


def _run_name(sweep: str, items: list[tuple[str, Any]]) -> str:
    """``sweep_key-value_...`` in ``[A-Za-z0-9_.-]``, at most 80 characters."""
    name = "_".join([sweep, *(f"{k}-{_format(v)}" for k, v in items)])
    name = _UNSAFE.sub("_", name)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}_{digest}"
    return name
