"""Experiment trackers as sinks: TensorBoard, MLflow and W&B, each an optional extra
(``pip install 'sgdlab[tensorboard]'``, ``[mlflow]``, ``[wandb]``, or ``[trackers]`` for all).

A run's ``[[trackers]]`` tables (:class:`~sgdlab.config.TrackerConfig`) or ``--track
KIND[=DEST]`` switch them on; they receive everything the store does, live, from the
trainer's process (and from each sweep worker for its own runs). ``sgdlab export`` replays
stored runs through the same sinks (:func:`sgdlab.sinks.replay.replay`).

:func:`check_trackers` runs where a config is validated: an unknown kind, a missing extra
or a destination that cannot be written is a ConfigError naming ``trackers[i]`` before any
run is created.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from sgdlab.config import TrackerConfig
from sgdlab.errors import ConfigError
from sgdlab.sinks.base import Sink

EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
          "wandb": ("wandb", "wandb")}  # kind -> (module to import, pip extra)
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql",
                  "databricks")


def check_trackers(trackers: list[TrackerConfig], where: str = "trackers") -> None:
    """ConfigError naming the tracker unless its extra is installed and its destination
    can be written. Writes nothing."""
    for i, tracker in enumerate(trackers):
        at = f"{where}[{i}]"
        tracker.check(at)
        module, extra = EXTRAS[tracker.kind]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{at}.kind: {tracker.kind} needs its extra: "
                              f"pip install 'sgdlab[{extra}]'")
        if tracker.kind == "mlflow" and _is_uri(tracker.dest):
            folder = _mlflow_uri_folder(f"{at}.dest", tracker.dest)
            if folder is not None:
                check_folder(f"{at}.dest", folder, tracker.dest)
        elif tracker.dest:
            check_folder(f"{at}.dest", Path(tracker.dest).expanduser(), tracker.dest)


def check_folder(field: str, folder: Path, shown: str) -> None:
    """ConfigError naming ``field`` unless ``folder`` is a folder, or could be made one,
    that this process can write in."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{field}: {shown}: is a file, not a folder")
    ancestor = folder
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{field}: {shown}: cannot be created, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}: {shown}: cannot write in {ancestor}")


def _is_uri(dest: str) -> bool:
    return "://" in dest or dest.startswith(("file:", "sqlite:", "databricks"))


def _mlflow_uri_folder(field: str, uri: str) -> Path | None:
    """The local folder an MLflow tracking URI writes in (None for a server)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in MLFLOW_SCHEMES:
        raise ConfigError(f"{field}: {uri!r}: MLflow does not track to {scheme}: URIs "
                          f"(use a folder or one of {', '.join(MLFLOW_SCHEMES)})")
    if scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not path:
            raise ConfigError(f"{field}: {uri!r}: expected sqlite:///path/to/mlflow.db")
        return Path("/" + path.lstrip("/") if uri.startswith("sqlite:////") else path).parent
    if scheme == "file":
        return Path(uri.split("file://", 1)[-1] if "file://" in uri else uri[len("file:"):])
    return None


def mlflow_uri(dest: str) -> str | None:
    """The tracking URI for ``dest``: itself if a URI; a folder becomes the MLflow default
    kind of store inside it (``sqlite:///<folder>/mlflow.db``); "" is MLflow's own default."""
    if not dest or _is_uri(dest):
        return dest or None
    return f"sqlite:///{Path(dest).expanduser().absolute() / 'mlflow.db'}"


def build_trackers(trackers: list[TrackerConfig]) -> list[Sink]:
    """A sink per tracker (nothing is written before :meth:`Sink.start`)."""
    sinks: list[Sink] = []
    for tracker in trackers:
        if tracker.kind == "tensorboard":
            from sgdlab.sinks.tensorboard_sink import TensorBoardSink

            sinks.append(TensorBoardSink(tracker.dest))
        elif tracker.kind == "mlflow":
            from sgdlab.sinks.mlflow_sink import MLflowSink

            sinks.append(MLflowSink(mlflow_uri(tracker.dest), tracker.project))
        else:
            from sgdlab.sinks.wandb_sink import WandbSink

            sinks.append(WandbSink(tracker.dest, tracker.project, tracker.online))
    return sinks


def parse_track(text: str) -> TrackerConfig:
    """``--track KIND[=DEST]`` -> a TrackerConfig (checked)."""
    kind, _, dest = text.partition("=")
    tracker = TrackerConfig(kind=kind.strip(), dest=dest.strip())
    tracker.check(f"--track {text}")
    if tracker.dest and not _is_uri(tracker.dest):
        tracker.dest = str(Path(tracker.dest).expanduser().absolute())
    return tracker
