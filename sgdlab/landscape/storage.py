"""Results as arrays plus one JSON document of metadata (``meta_json``, a 0-d string array):
in memory (:func:`pack`, :func:`unpack`, e.g. for a run's ``arrays/`` folder in the store)
or as an .npz file written atomically (a temporary file renamed into place, so a failed
write leaves nothing behind)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sgdlab.landscape.errors import LandscapeError


def to_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def pack(arrays: dict, meta: dict) -> dict[str, np.ndarray]:
    """``arrays`` (name → array or tensor) as numpy arrays, with ``meta`` (JSON-able) under
    the reserved name ``meta_json``."""
    if "meta_json" in arrays:
        raise LandscapeError("save: 'meta_json' is a reserved array name")
    payload = {k: to_numpy(v) for k, v in arrays.items()}
    payload["meta_json"] = np.array(json.dumps(meta, sort_keys=True))
    return payload


def unpack(payload: dict, where="arrays") -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) from a :func:`pack` result; ``where`` names the source in errors."""
    if "meta_json" not in payload:
        raise LandscapeError(f"{where}: not a landscape result (no metadata)")
    arrays = {k: v for k, v in payload.items() if k != "meta_json"}
    return arrays, json.loads(str(payload["meta_json"]))


def save_npz(path: str | os.PathLike, arrays: dict, meta: dict) -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` (see :func:`pack`)."""
    path = Path(path)
    payload = pack(arrays, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) as written by :func:`save_npz`."""
    try:
        with np.load(path, allow_pickle=False) as f:
            payload = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise LandscapeError(f"{path}: not a landscape .npz file ({err})") from err
    return unpack(payload, f"{path}")
