"""Where each dataset comes from: local files, checksummed downloads, generators.

:func:`load_source` returns the full dataset as numpy arrays in its stored units
(:class:`RawData`); subsets, corruption and normalization happen in
:mod:`sgdlab.data.transforms`.

Lookup for fashion-mnist / mnist / cifar10: ``data.file`` if set (an ``.npz`` file, a
folder of IDX files, a CIFAR archive or folder); else in the data root ``<root>/<name>/``
(official files, md5-verified), else ``<root>/fashion_mnist.npz`` | ``<root>/mnist.npz`` |
``<root>/mnist_10k.npz`` | ``<root>/cifar10.npz``; else a download into ``<root>/<name>/``
when ``data.download`` is true.
"""

from __future__ import annotations

import random
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgdlab.config import DataConfig
from sgdlab.data import download as dl
from sgdlab.data import formats
from sgdlab.errors import ConfigError, DataError

# Official mirrors and md5 checksums (as listed in torchvision.datasets.mnist / cifar).
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {formats.CIFAR_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
}
NPZ_NAMES = {
    "fashion-mnist": ["fashion_mnist.npz"],
    "mnist": ["mnist.npz", "mnist_10k.npz"],
    "cifar10": ["cifar10.npz"],
}
IMAGE_SHAPES = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
DIGITS_SPLIT_SEED = 0  # the digits train/test split is a property of the dataset, not of the run
DIGITS_TEST = 360
SYNTHETIC_DEFAULT = (2000, 1000)  # (n_train, n_test) when data.n_train / data.n_test are 0


@dataclass
class RawData:
    """A full dataset in stored units. ``pixel_max`` is the value of a white pixel for images
    (255, or 16 for digits), None for vector data."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    pixel_max: float | None
    source: str
    generated: bool = False  # synthetic: already of the requested sizes, no subset drawn


def rng(seed: int, *tags: str) -> np.random.Generator:
    """An independent numpy stream for ``(seed, *tags)``: each use of randomness has its own."""
    words = [seed & 0xFFFFFFFFFFFFFFFF] + [zlib.crc32(t.encode()) for t in tags]
    return np.random.default_rng(np.random.SeedSequence(words))


def load_source(cfg: DataConfig, seed: int) -> RawData:
    """The dataset named by ``cfg.name``, before subsetting, corruption and normalization."""
    if cfg.name in IMAGE_SHAPES:
        return _image_dataset(cfg)
    return {"digits": _digits, "mnist1d": _mnist1d, "gaussian-mixture": _gaussian_mixture,
            "teacher-student": _teacher_student}[cfg.name](cfg, seed)


# ---------------------------------------------------------------------------------------
# real image datasets


def _image_dataset(cfg: DataConfig) -> RawData:
    name = cfg.name
    path = _locate(cfg)
    if path.suffix == ".npz" or (path.is_file() and zipfile.is_zipfile(path)):
        arrays = formats.read_npz(path)
    elif name == "cifar10":
        arrays = formats.read_cifar10(path)
    elif path.is_dir():
        arrays = formats.read_idx_folder(path)
    else:
        raise DataError(formats.not_a_dataset(path, "an .npz file or a folder of IDX files"))
    x_train, y_train, x_test, y_test = arrays
    shape = IMAGE_SHAPES[name]
    x_train, x_test = (_as_images(_inputs(x, path), shape, path) for x in (x_train, x_test))
    pixel_max = 255.0 if np.issubdtype(x_train.dtype, np.integer) else 1.0
    for x in (x_train, x_test):
        if x.size and (x.min() < 0 or x.max() > pixel_max):
            raise DataError(f"{path}: pixel values outside [0, {pixel_max:g}]")
    raw = RawData(name, "classification", x_train, _labels(y_train, path), x_test,
                  _labels(y_test, path), 10, pixel_max, str(path))
    _check_labels(raw, path)
    return raw


def _locate(cfg: DataConfig) -> Path:
    """The file or folder to read for a real image dataset (downloading it if allowed)."""
    if cfg.file:
        path = Path(cfg.file).expanduser()
        if not path.exists():
            raise DataError(f"{path}: file not found (data.file)")
        return path
    root = dl.data_root(cfg.root)
    folder = root / cfg.name
    checksums = CHECKSUMS[cfg.name]
    present = [f for f in checksums if (folder / f).is_file()]
    if cfg.name == "cifar10" and (folder / formats.CIFAR_FOLDER / formats.CIFAR_TEST).is_file():
        return folder / formats.CIFAR_FOLDER
    if len(present) == len(checksums) or (present and cfg.download):
        return _fetch_official(cfg.name, folder, cfg.download)
    for npz in NPZ_NAMES[cfg.name]:
        if (root / npz).is_file():
            return root / npz
    if cfg.download:
        return _fetch_official(cfg.name, folder, True)
    npz = [str(root / n) for n in NPZ_NAMES[cfg.name]]
    wanted = ", ".join([f"{folder}/{{{','.join(checksums)}}}", *npz])
    raise DataError(f"{folder}: {cfg.name} not found (looked for {wanted}); "
                    "set data.file, data.root or $SGDLAB_DATA, or data.download=true")


def _fetch_official(name: str, folder: Path, allow_download: bool) -> Path:
    """Verify (and download what is missing of) the official files in ``folder``."""
    for filename, md5 in CHECKSUMS[name].items():
        target = folder / filename
        if target.is_file():
            dl.verify(target, md5)
        elif allow_download:
            dl.download([m + filename for m in MIRRORS[name]], target, md5)
        else:
            raise DataError(f"{target}: file not found and data.download is false")
    return folder / formats.CIFAR_ARCHIVE if name == "cifar10" else folder


def _as_images(x: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    if x.ndim == 4 and x.shape[1:] == shape[1:] + shape[:1]:  # (n, H, W, C) -> (n, C, H, W)
        x = x.transpose(0, 3, 1, 2)
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise DataError(f"{path}: images of shape {x.shape[1:]}, expected {shape}")
    return np.ascontiguousarray(x.reshape(len(x), *shape))


def _inputs(x: np.ndarray, path: Path | str) -> np.ndarray:
    """``x`` if numeric and finite, else a DataError naming the file."""
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: inputs must be numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{path}: inputs contain non-finite values (NaN or inf)")
    return x


def _labels(y: np.ndarray, path: Path | str) -> np.ndarray:
    """Class labels as int64: integers, or floats with integral values (3.0); else DataError."""
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise DataError(f"{path}: labels must be integers, got {y[bad][0].item()!r}")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


def _check_labels(raw: RawData, path: Path | str) -> None:
    for y in (raw.y_train, raw.y_test):
        if y.size and (y.min() < 0 or y.max() >= raw.n_classes):
            raise DataError(f"{path}: labels outside 0..{raw.n_classes - 1}")


# ---------------------------------------------------------------------------------------
# bundled and generated datasets


def _digits(cfg: DataConfig, seed: int) -> RawData:
    """scikit-learn's 1,797 8x8 digits (values 0..16), split 1,437 / 360 by a fixed permutation."""
    if cfg.file:
        x_train, y_train, x_test, y_test = formats.read_npz(Path(cfg.file).expanduser())
        source = cfg.file
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        perm = rng(DIGITS_SPLIT_SEED, "digits-split").permutation(len(digits.target))
        x, y = digits.images[perm], digits.target[perm]
        k = DIGITS_TEST
        x_train, y_train, x_test, y_test = x[k:], y[k:], x[:k], y[:k]
        source = "sklearn.datasets.load_digits"
    shape = (1, 8, 8)
    x_train, x_test = (_as_images(_inputs(x, source), shape, Path(source))
                       for x in (x_train, x_test))
    raw = RawData("digits", "classification", x_train, _labels(y_train, source), x_test,
                  _labels(y_test, source), 10, 16.0, source)
    _check_labels(raw, source)
    return raw


def _mnist1d(cfg: DataConfig, seed: int) -> RawData:
    """MNIST-1D from ``mnist1d.data.make_dataset`` (default arguments): ``data.file`` if
    set, else ``<data root>/mnist1d.npz`` if there, else generated and cached as
    ``<cache folder>/mnist1d.npz`` (never written into a data folder)."""
    path = Path(cfg.file).expanduser() if cfg.file else dl.data_root(cfg.root) / "mnist1d.npz"
    if not (path.is_file() or cfg.file):
        path = dl.cache_root() / "mnist1d.npz"
    if path.is_file() or cfg.file:
        x_train, y_train, x_test, y_test = formats.read_npz(path)
    else:
        x_train, y_train, x_test, y_test = _make_mnist1d()
        try:
            dl.save_npz(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        except OSError as exc:
            dl.log.warning("could not cache MNIST-1D at %s: %s", path, exc)
    x_train, x_test = (_inputs(x, path).reshape(len(x), -1) for x in (x_train, x_test))
    raw = RawData("mnist1d", "classification", x_train, _labels(y_train, path), x_test,
                  _labels(y_test, path), 10, None, str(path))
    _check_labels(raw, path)
    return raw


def _make_mnist1d() -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    state_np, state_py = np.random.get_state(), random.getstate()  # make_dataset reseeds both
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state_np)
        random.setstate(state_py)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def _sizes(cfg: DataConfig) -> tuple[int, int]:
    return cfg.n_train or SYNTHETIC_DEFAULT[0], cfg.n_test or SYNTHETIC_DEFAULT[1]


def _gaussian_mixture(cfg: DataConfig, seed: int) -> RawData:
    """``n_classes`` Gaussians in ``dim`` dimensions with unit isotropic covariance and means
    ``mu_c ~ N(0, separation^2 / dim I)`` (so ``|mu_c| ~ separation``); balanced classes."""
    k, d = cfg.n_classes, cfg.dim
    if k < 2:
        raise ConfigError("data.n_classes: gaussian-mixture needs at least 2 classes")
    means = rng(seed, "gm-means").normal(0.0, cfg.separation / np.sqrt(d), size=(k, d))

    def sample(n: int, tag: str) -> tuple[np.ndarray, np.ndarray]:
        g = rng(seed, tag)
        y = g.permutation(np.arange(n) % k)
        return means[y] + g.standard_normal((n, d)), y.astype(np.int64)

    n_train, n_test = _sizes(cfg)
    (x_train, y_train), (x_test, y_test) = sample(n_train, "gm-train"), sample(n_test, "gm-test")
    return RawData("gaussian-mixture", "classification", x_train, y_train, x_test, y_test, k, None,
                   f"generated (seed {seed})", generated=True)


def _teacher_student(cfg: DataConfig, seed: int) -> RawData:
    """Targets of a random teacher ``W2 tanh(W1 x + b1)`` (``dim -> teacher_width -> n_classes``,
    ``W1 ~ N(0, 1/dim)``, ``b1 ~ N(0, 0.1^2)``, ``W2 ~ N(0, 1/teacher_width)``) on ``x ~ N(0, I)``,
    plus ``noise_std * N(0, 1)`` on train and test targets alike."""
    d, h, k = cfg.dim, cfg.teacher_width, cfg.n_classes
    g = rng(seed, "ts-teacher")
    w1 = g.standard_normal((d, h)) / np.sqrt(d)
    b1 = 0.1 * g.standard_normal(h)
    w2 = g.standard_normal((h, k)) / np.sqrt(h)

    def sample(n: int, tag: str) -> tuple[np.ndarray, np.ndarray]:
        g = rng(seed, tag)
        x = g.standard_normal((n, d))
        return x, np.tanh(x @ w1 + b1) @ w2 + cfg.noise_std * g.standard_normal((n, k))

    n_train, n_test = _sizes(cfg)
    (x_train, y_train), (x_test, y_test) = sample(n_train, "ts-train"), sample(n_test, "ts-test")
    return RawData("teacher-student", "regression", x_train, y_train, x_test, y_test, k, None,
                   f"generated (seed {seed})", generated=True)
