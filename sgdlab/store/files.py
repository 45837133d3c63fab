"""Atomic file writes and the formats of a run folder: npz arrays, checkpoints, JSON.

Every file is written to a hidden temporary file beside its target and moved into place with
``os.replace``, so a reader (or a killed writer) never sees half a file. Durable writes
(checkpoints, final weights) also fsync the file and its folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sgdlab.store.errors import StoreError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CHECKPOINT = re.compile(r"step_(\d+)\.pt")
_ARRAY = re.compile(r"(\d+)\.npz")


def check_name(name: str, what: str, run_id: str) -> str:
    """A file or folder name: letters, digits, ``_ . -``, not starting with ``.`` or ``-``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StoreError(f"invalid {what} name {name!r} for run '{run_id}' "
                         "(use letters, digits, '_', '.', '-')")
    return name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if durable:
        _fsync(path.parent)


def write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def write_json(path: Path, obj: Any) -> None:
    """Indented JSON; numpy/torch values become lists or numbers, NaN is written as NaN."""
    write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def read_json(path: Path, run_id: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"run '{run_id}' has no file {path.name}") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"unreadable {path}: {exc}") from exc


# -- arrays ------------------------------------------------------------------------------
def _to_numpy(value: Any, key: str, path: Path) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise StoreError(f"array '{key}' for {path} has dtype object; only numeric arrays")
    return array


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """A compressed ``.npz`` (deflate, as ``np.savez_compressed``) readable by
    ``np.load(allow_pickle=False)``; any string keys. Level 1: parameter vectors shrink by
    ~8% (float32 weights are nearly incompressible) at ~50 ms a MB; small arrays much more."""
    converted = {str(k): _to_numpy(v, str(k), path) for k, v in arrays.items()}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED,
                                                   compresslevel=1, allowZip64=True) as zf:
        for key, array in converted.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise StoreError(f"unreadable arrays file {path}: {exc}") from exc


def array_steps(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m[1]) for p in folder.iterdir() if (m := _ARRAY.fullmatch(p.name)))


# -- checkpoints -------------------------------------------------------------------------
def checkpoint_steps(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m[1]) for p in folder.iterdir() if (m := _CHECKPOINT.fullmatch(p.name)))


def check_loadable(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value ``torch.load(weights_only=True)`` would refuse
    on some torch >= 2.4: only dicts, lists, tuples, str, int, float, bool, None, tensors,
    torch.Size, dtypes and devices pass (torch 2.4 refuses bytes, sets and complex)."""
    import torch

    if isinstance(obj, dict):
        for key, value in obj.items():
            check_loadable(key, f"{where} key")
            check_loadable(value, f"{where}[{key!r}]")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            check_loadable(value, f"{where}[{i}]")
    elif not isinstance(obj, str | int | float | type(None)
                        | torch.Tensor | torch.Size | torch.dtype | torch.device):
        raise TypeError(f"checkpoint {where} is a {type(obj).__module__}.{type(obj).__name__}, "
                        "which torch.load(weights_only=True) refuses; store tensors, numbers, "
                        "strings, lists, tuples or dicts")


def checkpoint_bytes(state: dict) -> bytes:
    """``state`` serialized as ``torch.save`` writes it (after :func:`check_loadable`): a
    snapshot, so the tensors may change once this returns."""
    import io

    import torch

    check_loadable(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, state: dict | bytes) -> None:
    """Write a checkpoint durably: a state dict, or the bytes of :func:`checkpoint_bytes`."""
    data = state if isinstance(state, bytes) else checkpoint_bytes(state)
    write_bytes(path, data, durable=True)


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` on the CPU; StoreError naming the file if unreadable."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StoreError(f"no checkpoint {path}") from None
    except Exception as exc:  # truncated zip, bad pickle, refused global...
        text = str(exc).strip()
        if "Weights only load failed" in text:  # say why, without torch's unsafe advice
            found = re.search(r"GLOBAL (\S+)", text)
            what = (f"it needs {found[1]}, which a weights-only load never calls" if found
                    else "it holds objects other than tensors, numbers and containers")
            raise StoreError(f"unreadable checkpoint {path}: refused, {what}; sgdlab never "
                             "runs code from a checkpoint") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise StoreError(f"unreadable checkpoint {path}: {first}") from None


# -- safetensors -------------------------------------------------------------------------
def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    # a copy on the CPU: contiguous, and no storage shared between entries (tied weights)
    cpu = {str(k): v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    with atomic_path(path, durable=True) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)


def load_tensors(path: Path, run_id: str) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise StoreError(f"run '{run_id}' has no file {path.name}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise StoreError(f"unreadable tensors file {path}: {exc}") from exc
