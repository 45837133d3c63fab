"""Readers for the on-disk formats: IDX (MNIST family), ``.npz`` and the CIFAR-10 python archive.

Every reader returns numpy arrays and raises :class:`~sgdlab.errors.DataError` naming the
file when it is missing, truncated or not in the expected format.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from sgdlab.errors import DataError

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test

# IDX type codes (http://yann.lecun.com/exdb/mnist/); all multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {  # role -> official file name (without .gz)
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped when its name ends in ``.gz``) into a native-endian array."""
    path = Path(path)
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims))
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"{path}: IDX size mismatch: header says {dims} ({count * dtype.itemsize} bytes), "
            f"file has {len(raw) - header} bytes of data"
        )
    array = np.frombuffer(raw, dtype, count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in ``.gz``); for tests, tools."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    code = codes[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(np.dtype(_IDX_DTYPES[code])).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def find_idx_files(folder: Path) -> dict[str, Path]:
    """The IDX files (``.gz`` or plain) present in ``folder`` or ``folder/raw``, by role."""
    found = {}
    for role, name in IDX_FILES.items():
        for base in (folder, folder / "raw"):
            for candidate in (base / f"{name}.gz", base / name):
                if role not in found and candidate.is_file():
                    found[role] = candidate
    return found


def read_idx_folder(folder: Path) -> Split:
    """The four IDX files of an MNIST-format folder."""
    found = find_idx_files(folder)
    missing = [IDX_FILES[r] + ".gz" for r in IDX_FILES if r not in found]
    if missing:
        raise DataError(f"{folder}: missing IDX files {', '.join(missing)}")
    arrays = [read_idx(found[role]) for role in IDX_FILES]
    _check_pairs(folder, *arrays)
    return tuple(arrays)  # type: ignore[return-value]


def not_a_dataset(path: Path, expected: str) -> str:
    """The one-line message for a file that is not a dataset file sgdlab reads."""
    if path.suffix == ".npy" or _starts_with(path, b"\x93NUMPY"):
        return (f"{path}: a .npy file holds one array; expected {expected} with arrays "
                "x_train, y_train, x_test, y_test (np.savez)")
    return f"{path}: not {expected}"


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def read_npz(path: Path) -> Split:
    """An ``.npz`` file holding ``x_train, y_train, x_test, y_test``."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an .npz file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise DataError(not_a_dataset(path, "an .npz file (a zip archive of arrays)"))
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)} in .npz file")
            arrays = tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read .npz ({exc})") from None
    _check_pairs(path, *arrays)
    return arrays  # type: ignore[return-value]


def read_cifar10(path: Path) -> Split:
    """CIFAR-10 from ``cifar-10-python.tar.gz``, a ``cifar-10-batches-py`` folder, or a folder
    holding either. Images come back as uint8 ``(n, 3, 32, 32)``."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path, path / CIFAR_FOLDER):
            if (candidate / CIFAR_TEST).is_file():
                return _cifar_from(candidate, lambda name, d=candidate: (d / name).read_bytes())
        if (path / CIFAR_ARCHIVE).is_file():
            path = path / CIFAR_ARCHIVE
        else:
            raise DataError(f"{path}: no {CIFAR_FOLDER}/ batches or {CIFAR_ARCHIVE} in this folder")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name.split("/")[-1]: m for m in tar.getmembers() if m.isfile()}

            def member(name: str) -> bytes:
                if name not in members:
                    raise DataError(f"{path}: archive has no {CIFAR_FOLDER}/{name}")
                return tar.extractfile(members[name]).read()

            return _cifar_from(path, member)
    except tarfile.ReadError:  # its message may list every compression tried, one per line
        raise DataError(f"{path}: corrupted or not a tar archive (plain, gzip, bz2 or xz); "
                        "expected the CIFAR-10 python archive") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        detail = " ".join(str(exc).split())
        raise DataError(f"{path}: cannot read CIFAR-10 archive ({detail})") from None


def _cifar_from(where: Path, read) -> Split:
    try:
        train = [_cifar_batch(where / name, read(name)) for name in CIFAR_TRAIN]
        x_test, y_test = _cifar_batch(where / CIFAR_TEST, read(CIFAR_TEST))
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: file not found") from None
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


def _cifar_batch(name: Path, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        entry = _SafeUnpickler(io.BytesIO(blob), encoding="bytes").load()
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(entry["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, AttributeError, EOFError,
            TypeError) as exc:
        raise DataError(f"{name}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    _check_pairs(name, x, y)
    return x, y


class _SafeUnpickler(pickle.Unpickler):
    """Unpickle plain containers and numpy arrays only: a data file must not run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _check_pairs(where: Path, *arrays: np.ndarray) -> None:
    for x, y in zip(arrays[::2], arrays[1::2]):
        if y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{where}: {len(x)} inputs but labels of shape {y.shape}")
