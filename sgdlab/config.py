"""Typed, validated run configuration.

A run is described by a TOML file that maps onto :class:`RunConfig` (sections ``data``,
``model``, ``optim``, ``train`` and a list of ``[[probes]]`` tables), plus dotted
overrides such as ``optim.lr=0.05``. Every error names the dotted field and is raised
as :class:`~sgdlab.errors.ConfigError` before anything is written anywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdlab.errors import ConfigError
from sgdlab.imports import add_search_folder, check_syntax, is_import_path

DATASETS = (
    "fashion-mnist", "mnist", "cifar10", "digits", "mnist1d", "gaussian-mixture", "teacher-student",
)
NORMALIZATIONS = ("none", "unit", "center", "standardize")
INPUT_CORRUPTIONS = ("none", "shuffled-pixels", "random-pixels", "gaussian")
ACTIVATIONS = ("relu", "tanh", "elu")
LOSSES = ("cross_entropy", "mse")
LR_SCHEDULES = ("constant", "step", "cosine", "cyclic")
BATCH_SCHEDULES = ("constant", "step", "cyclic")
OPTIMIZERS = ("sgd", "nsgd")
TRACKERS = ("tensorboard", "mlflow", "wandb")
EVAL_SPLITS = ("train", "test")  # "train" also evaluates the clean and corrupted examples


@dataclass
class DataConfig:
    """Dataset, subset, normalization and corruption.

    ``name`` is a built-in dataset or the import path of a loader of one's own,
    ``"package.module:function"``, called as ``function(cfg, seed, **options)`` (``cfg``
    this section, ``options`` the ``options`` table); see :mod:`sgdlab.data.user`."""

    name: str = "mnist1d"
    root: str = ""  # data folder; "" -> $SGDLAB_DATA, then the user cache folder
    file: str = ""  # explicit local file (.npz) or folder (idx.gz / CIFAR archive)
    download: bool = True
    n_train: int = 0  # 0 = all
    n_test: int = 0  # 0 = all
    stratified: bool = False
    normalize: str = "standardize"
    flatten: bool = False
    label_noise: float = 0.0  # fraction of training labels replaced by uniform random labels
    input_corruption: str = "none"
    input_corruption_fraction: float = 1.0  # fraction of training inputs corrupted
    # synthetic tasks (gaussian-mixture, teacher-student)
    dim: int = 20
    n_classes: int = 10  # gaussian-mixture classes; teacher-student output dimension
    separation: float = 3.0  # gaussian-mixture: scale of the class means
    teacher_width: int = 32
    noise_std: float = 0.0  # teacher-student: Gaussian noise added to targets
    options: dict = field(default_factory=dict)  # keyword arguments of a loader of one's own

    def check(self) -> None:
        _name_or_path("data.name", self.name, DATASETS)
        _options_need_path("data", self.name, self.options)
        _choice("data.normalize", self.normalize, NORMALIZATIONS)
        _choice("data.input_corruption", self.input_corruption, INPUT_CORRUPTIONS)
        _at_least("data.n_train", self.n_train, 0)
        _at_least("data.n_test", self.n_test, 0)
        _fraction("data.label_noise", self.label_noise)
        _fraction("data.input_corruption_fraction", self.input_corruption_fraction)
        _at_least("data.dim", self.dim, 1)
        _at_least("data.n_classes", self.n_classes, 1)
        _at_least("data.teacher_width", self.teacher_width, 1)
        _at_least("data.noise_std", self.noise_std, 0.0)


@dataclass
class ModelConfig:
    """Architecture from the registry in :mod:`sgdlab.models`, or the import path of a
    builder of one's own, ``"package.module:function"``, called as
    ``function(cfg, input_shape, n_outputs, **options)``."""

    name: str = "mlp"
    depth: int = 2  # MLP: number of hidden layers
    width: int = 256  # MLP: hidden units
    width_mult: float = 1.0  # CNN / VGG / ResNet channel multiplier
    activation: str = "relu"
    batchnorm: bool = False
    dropout: float = 0.0
    options: dict = field(default_factory=dict)  # keyword arguments of a builder of one's own

    def check(self) -> None:
        """The fields' ranges; ``name`` is checked by the model registry
        (:func:`sgdlab.models.check_model`), which sits above the config."""
        if not self.name:
            raise ConfigError("model.name: must name a model")
        if is_import_path(self.name):
            check_syntax("model.name", self.name)
        _options_need_path("model", self.name, self.options)
        _choice("model.activation", self.activation, ACTIVATIONS)
        _at_least("model.depth", self.depth, 0)
        _at_least("model.width", self.width, 1)
        _positive("model.width_mult", self.width_mult)
        _fraction("model.dropout", self.dropout, closed_right=False)


@dataclass
class LRScheduleConfig:
    """Learning-rate factor over training; multiplies ``optim.lr``.

    constant: 1. step: ``gamma ** (number of milestones passed)``, milestones in epochs.
    cosine: ``min_factor + (1 - min_factor) (1 + cos(pi t / T)) / 2`` over all steps.
    cyclic: triangular between ``min_factor`` and 1 with ``period`` epochs, constant within
    an epoch (the same factor as the cyclic batch-size schedule, so both give equal eta/S).
    ``warmup`` steps of linear warm-up multiply any of them.
    """

    kind: str = "constant"
    warmup: int = 0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_factor: float = 0.0
    period: int = 10

    def check(self) -> None:
        _choice("optim.lr_schedule.kind", self.kind, LR_SCHEDULES)
        _at_least("optim.lr_schedule.warmup", self.warmup, 0)
        _positive("optim.lr_schedule.gamma", self.gamma)
        _fraction("optim.lr_schedule.min_factor", self.min_factor)
        _at_least("optim.lr_schedule.period", self.period, 1)
        _increasing("optim.lr_schedule.milestones", self.milestones)
        if self.kind == "step" and not self.milestones:
            raise ConfigError("optim.lr_schedule.milestones: a step schedule needs milestones "
                              "(epochs at which the learning rate is multiplied by gamma)")


@dataclass
class BatchScheduleConfig:
    """Batch size over epochs; multiplies ``optim.batch_size``.

    step: ``factor ** (number of milestones passed)`` (batch-size growth in place of
    learning-rate decay). cyclic: ``round(S / c)`` with ``c`` the cyclic factor of
    :class:`LRScheduleConfig` (triangular between ``min_factor`` and 1, ``period`` epochs).
    """

    kind: str = "constant"
    milestones: list[int] = field(default_factory=list)
    factor: float = 2.0
    min_factor: float = 0.25
    period: int = 10

    def check(self) -> None:
        _choice("optim.batch_schedule.kind", self.kind, BATCH_SCHEDULES)
        _positive("optim.batch_schedule.factor", self.factor)
        _fraction("optim.batch_schedule.min_factor", self.min_factor)
        if self.kind == "cyclic" and self.min_factor == 0:
            raise ConfigError(
                "optim.batch_schedule.min_factor: must be > 0 for a cyclic batch size")
        _at_least("optim.batch_schedule.period", self.period, 1)
        _increasing("optim.batch_schedule.milestones", self.milestones)
        if self.kind == "step" and not self.milestones:
            raise ConfigError("optim.batch_schedule.milestones: a step schedule needs milestones "
                              "(epochs at which the batch size is multiplied by factor)")


@dataclass
class OptimConfig:
    """SGD with momentum (heavy-ball or Nesterov) and weight decay; NSGD (Nudged SGD)."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128  # 0 = full batch (gradient descent)
    nsgd_gamma: float = 1.0  # NSGD: factor on the gradient inside the top-K Hessian subspace
    nsgd_k: int = 5
    nsgd_every: int = 0  # NSGD: refresh the subspace every k steps; 0 = every epoch
    nsgd_subset: int = 2048  # NSGD: examples used for the Hessian
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    batch_schedule: BatchScheduleConfig = field(default_factory=BatchScheduleConfig)

    def check(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        _positive("optim.lr", self.lr)
        _fraction("optim.momentum", self.momentum, closed_right=False)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("optim.nesterov: needs optim.momentum > 0")
        _at_least("optim.weight_decay", self.weight_decay, 0.0)
        _at_least("optim.batch_size", self.batch_size, 0)
        _at_least("optim.nsgd_gamma", self.nsgd_gamma, 0.0)
        _at_least("optim.nsgd_k", self.nsgd_k, 1)
        _at_least("optim.nsgd_every", self.nsgd_every, 0)
        _at_least("optim.nsgd_subset", self.nsgd_subset, 1)
        self.lr_schedule.check()
        self.batch_schedule.check()


@dataclass
class TrainConfig:
    """Length of training, loss, evaluation and checkpoint cadence.

    Evaluations (loss and accuracy on ``eval_splits``) run every ``eval_every`` steps or,
    when it is 0, at the start and at the end of every ``eval_epochs``-th epoch;
    ``eval_epochs = 0`` evaluates only at the end. The end of training always evaluates.
    Checkpoints are taken every ``checkpoint_every`` steps or, when it is 0, at the end of
    every ``checkpoint_epochs``-th epoch; the end of training always checkpoints.
    """

    epochs: int = 10
    max_steps: int = 0  # > 0: stop after this many steps even if epochs remain
    loss: str = "cross_entropy"  # or mse, or "package.module:function" (sgdlab.losses)
    eval_every: int = 0  # steps between evaluations; 0 = every eval_epochs epochs
    eval_epochs: int = 1  # epochs between evaluations when eval_every = 0; 0 = only the end
    eval_splits: list[str] = field(default_factory=lambda: list(EVAL_SPLITS))
    eval_batch_size: int = 0  # examples per forward pass; 0 = 4096 on CUDA, 128 on CPU
    checkpoint_every: int = 0  # steps between checkpoints; 0 = every checkpoint_epochs epochs
    checkpoint_epochs: int = 1  # epochs between checkpoints when checkpoint_every = 0
    keep_checkpoints: int = 2

    def check(self) -> None:
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.max_steps", self.max_steps, 0)
        _name_or_path("train.loss", self.loss, LOSSES)
        _at_least("train.eval_every", self.eval_every, 0)
        _at_least("train.eval_epochs", self.eval_epochs, 0)
        for i, split in enumerate(self.eval_splits):
            _choice(f"train.eval_splits[{i}]", split, EVAL_SPLITS)
        if not self.eval_splits:
            raise ConfigError("train.eval_splits: must name at least one of train, test")
        _at_least("train.eval_batch_size", self.eval_batch_size, 0)
        _at_least("train.checkpoint_every", self.checkpoint_every, 0)
        _at_least("train.checkpoint_epochs", self.checkpoint_epochs, 1)
        _at_least("train.keep_checkpoints", self.keep_checkpoints, 1)


@dataclass
class TrackerConfig:
    """An experiment tracker fed live during training (:mod:`sgdlab.sinks.trackers`).
    Trackers do not change the trajectory, so they are not part of a run's identity
    (its ``config_hash``): a finished run is not trained again to add one (use
    ``sgdlab export``)."""

    kind: str = ""  # tensorboard | mlflow | wandb
    # tensorboard: log folder (default <store>/tensorboard, a subfolder per run);
    # mlflow: a tracking URI or a folder (default: MLflow's own, $MLFLOW_TRACKING_URI);
    # wandb: the folder of its offline files (default: wandb's own, $WANDB_DIR or .)
    dest: str = ""
    project: str = ""  # MLflow experiment / W&B project (default: the run's group, or sgdlab)
    online: bool = False  # wandb: sync to the W&B servers (needs an account); default offline

    def check(self, where: str) -> None:
        _choice(f"{where}.kind", self.kind, TRACKERS)
        if self.online and self.kind != "wandb":
            raise ConfigError(f"{where}.online: only for kind = 'wandb'")


@dataclass
class RunConfig:
    """One run: a configuration trained once."""

    name: str = "run"
    group: str = ""
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probes: list[dict] = field(default_factory=list)
    trackers: list[TrackerConfig] = field(default_factory=list)

    def check(self) -> RunConfig:
        if not self.name or not all(c.isalnum() or c in "_.-" for c in self.name):
            raise ConfigError(
                f"name: {self.name!r} must be non-empty letters, digits, '_', '.', '-'")
        _at_least("seed", self.seed, 0)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device: {self.device!r} must be auto, cpu, cuda or cuda:N")
        _choice("dtype", self.dtype, ("float32", "float64"))
        self.data.check()
        self.model.check()
        self.optim.check()
        self.train.check()
        for i, spec in enumerate(self.probes):
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise ConfigError(f"probes[{i}]: must be a table with a 'name'")
        seen: dict[tuple[str, str], int] = {}
        for i, tracker in enumerate(self.trackers):
            tracker.check(f"trackers[{i}]")
            key = (tracker.kind, tracker.dest)
            if key in seen:
                raise ConfigError(f"trackers[{i}]: the same tracker as trackers[{seen[key]}]")
            seen[key] = i
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------
# building from dicts, files and overrides


def from_dict(data: dict[str, Any], cls: type = RunConfig, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + key
        if key not in names:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = coerce(dotted, value, hints[key])
    return cls(**kwargs)


def coerce(dotted: str, value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (a config dataclass, list, bool, int, float, str or dict)
    by the config's rules (no bool for a number, finite floats); ConfigError names ``dotted``."""
    if dataclasses.is_dataclass(hint):
        return from_dict(value, hint, dotted + ".")
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{dotted}: expected a list, got {value!r}")
        return [coerce(f"{dotted}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {hint}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{dotted}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{dotted}: must be finite, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: expected a string, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted}: expected a table, got {value!r}")
        _plain(dotted, value)
        return value
    raise TypeError(f"unsupported config type {hint}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.05"`` -> ``("optim.lr", 0.05)``; the value is read as TOML, else as
    a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of nested ``data`` with dotted overrides set (``{"optim.lr": 0.05}``)."""
    out = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file (give a .toml file)")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    add_search_folder(path.parent)  # import paths in it may name modules beside it
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> RunConfig:
    """Config file (or defaults) + dotted overrides -> validated :class:`RunConfig`."""
    data = read_config_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(data).check()


# ---------------------------------------------------------------------------------------
# small validators: each names its field


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def _name_or_path(name: str, value: str, choices: tuple[str, ...]) -> None:
    """A built-in name, or an import path of one's own (resolved by the registry above)."""
    if is_import_path(value):
        check_syntax(name, value)
    else:
        _choice(name, value, choices + ("package.module:function",))


def _options_need_path(section: str, name: str, options: dict) -> None:
    if options and not is_import_path(name):
        raise ConfigError(f"{section}.options: only for a {section} given by import path "
                          f"('package.module:function'), not {name!r}")


def _plain(dotted: str, value: Any) -> None:
    """ConfigError unless ``value`` is made of strings, numbers, booleans, lists and tables
    (what a run's JSON config can hold: no TOML dates, no NaN)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _plain(f"{dotted}.{key}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain(f"{dotted}[{i}]", item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{dotted}: must be finite, got {value!r}")
    elif not isinstance(value, str | int | float | bool):
        raise ConfigError(f"{dotted}: expected a string, number, boolean, list or table, "
                          f"got {value!r}")


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{name}: must be >= {low}, got {value}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name}: must be > 0, got {value}")


def _fraction(name: str, value: float, closed_right: bool = True) -> None:
    ok = 0 <= value <= 1 if closed_right else 0 <= value < 1
    if not ok:
        bounds = "[0, 1]" if closed_right else "[0, 1)"
        raise ConfigError(f"{name}: must be in {bounds}, got {value}")


def _increasing(name: str, values: list[int]) -> None:
    if any(b <= a for a, b in zip(values, values[1:])) or any(v < 0 for v in values):
        raise ConfigError(f"{name}: must be non-negative and increasing, got {values}")
