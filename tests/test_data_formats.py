"""File formats, lookup, checksums and the (mocked) download path of sgdlab.data. No network."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from sgdlab.config import DataConfig
from sgdlab.data import download, formats, load_data, sources
from sgdlab.errors import DataError

IDX = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX by hand: magic 0x00000803 (uint8, 3 dims) or 0x00000801, big-endian dims, gzipped."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes())


def tiny_mnist(n_train: int = 30, n_test: int = 20) -> dict[str, np.ndarray]:
    """Image ``i`` is constant with value ``i`` (so it can be traced); its label is ``i % 10``."""
    def images(n, offset):
        return np.repeat(np.arange(offset, offset + n, dtype=np.uint8), 784).reshape(n, 28, 28)

    return {
        "x_train": images(n_train, 0), "y_train": np.arange(n_train, dtype=np.uint8) % 10,
        "x_test": images(n_test, 100), "y_test": np.arange(100, 100 + n_test, dtype=np.uint8) % 10,
    }


def tiny_idx_files(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {IDX[k]: idx_bytes(v) for k, v in tiny_mnist().items()}
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    return blobs


def check_tiny(bundle) -> None:
    ids = bundle.x_train[:, 0, 0, 0].round().long()
    assert sorted(ids.tolist()) == list(range(30))  # the full set, permuted
    assert ids.tolist() != list(range(30))
    assert torch.equal(bundle.y_train, ids % 10)
    assert torch.equal(bundle.y_test, bundle.x_test[:, 0, 5, 5].round().long() % 10)


def test_idx_folder_via_data_file(tmp_path):
    tiny_idx_files(tmp_path / "idx")
    cfg = DataConfig(name="mnist", file=str(tmp_path / "idx"), normalize="none", download=False)
    bundle = load_data(cfg, seed=0)
    assert bundle.x_train.shape == (30, 1, 28, 28) and bundle.x_test.shape == (20, 1, 28, 28)
    assert bundle.y_train.dtype == torch.int64 and bundle.x_train.dtype == torch.float32
    check_tiny(bundle)
    assert torch.all(bundle.input_scale == 255)


def test_idx_roundtrip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(formats.read_idx(tmp_path / "a.gz"), a)
    formats.write_idx(tmp_path / "b", a.astype(np.int32) * 1000)
    np.testing.assert_array_equal(formats.read_idx(tmp_path / "b"), a.astype(np.int32) * 1000)

    (tmp_path / "short.gz").write_bytes(gzip.compress(gzip.decompress(idx_bytes(a))[:-5]))
    with pytest.raises(DataError, match="short.gz.*size mismatch"):
        formats.read_idx(tmp_path / "short.gz")
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04" + bytes(10)))
    with pytest.raises(DataError, match="magic.gz.*magic"):
        formats.read_idx(tmp_path / "magic.gz")
    (tmp_path / "notgz.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="notgz.gz"):
        formats.read_idx(tmp_path / "notgz.gz")


def test_npz_file_and_root_lookup(tmp_path):
    np.savez(tmp_path / "mnist.npz", **tiny_mnist())
    check_tiny(load_data(DataConfig(name="mnist", file=str(tmp_path / "mnist.npz"),
                                    normalize="none"), seed=1))
    # no data.file: <root>/mnist.npz is found in the data root
    check_tiny(load_data(DataConfig(name="mnist", root=str(tmp_path), normalize="none",
                                    download=False), seed=1))
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="bad.npz.*missing arrays"):
        load_data(DataConfig(name="mnist", file=str(tmp_path / "bad.npz")), seed=0)


def test_missing_data_without_download(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "fashion-mnist")):
        load_data(DataConfig(name="fashion-mnist", root=str(tmp_path), download=False), seed=0)
    with pytest.raises(DataError, match="nope.npz: file not found"):
        load_data(DataConfig(name="mnist", file=str(tmp_path / "nope.npz")), seed=0)


def test_corrupted_official_file_names_it(tmp_path):
    tiny_idx_files(tmp_path / "mnist")  # right names, wrong content for the official md5s
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch"):
        load_data(DataConfig(name="mnist", root=str(tmp_path), download=False), seed=0)


def fake_network(monkeypatch, served: dict[str, bytes], down: tuple[str, ...] = ()) -> list[str]:
    calls = []

    def open_url(url, timeout):
        calls.append(url)
        assert timeout > 0
        if url.startswith(down):
            raise urllib.error.URLError("mirror down")
        return io.BytesIO(served[url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(download, "open_url", open_url)
    return calls


def test_download_good_checksum(tmp_path, monkeypatch):
    blobs = tiny_idx_files(tmp_path / "src")
    monkeypatch.setitem(sources.CHECKSUMS, "mnist",
                        {k: hashlib.md5(v).hexdigest() for k, v in blobs.items()})
    calls = fake_network(monkeypatch, blobs, down=(sources.MIRRORS["mnist"][0],))
    bundle = load_data(DataConfig(name="mnist", root=str(tmp_path), normalize="none"), seed=0)
    check_tiny(bundle)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(blobs)
    assert len(calls) == 8  # first mirror down, second serves each of the 4 files
    # second call: files verified in place, no network
    load_data(DataConfig(name="mnist", root=str(tmp_path), normalize="none"), seed=0)
    assert len(calls) == 8


def test_download_bad_checksum_leaves_nothing(tmp_path, monkeypatch):
    blobs = tiny_idx_files(tmp_path / "src")
    fake_network(monkeypatch, blobs)  # the official md5s do not match the tiny files
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch for https://"):
        load_data(DataConfig(name="mnist", root=str(tmp_path)), seed=0)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_all_mirrors_down(tmp_path, monkeypatch):
    fake_network(monkeypatch, {}, down=("http",))
    with pytest.raises(DataError, match="could not download.*mirror down"):
        download.download(["https://a/x.gz", "http://b/x.gz"], tmp_path / "x.gz", "0" * 32)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# CIFAR-10


def cifar_batch(labels: list[int]) -> bytes:
    """Pixel (c, h, w) of image i is ``40 c + i``: channel planes are R, G, B in that order."""
    n = len(labels)
    data = (40 * np.arange(3)[None, :, None] + np.arange(n)[:, None, None]).repeat(1024, axis=2)
    return pickle.dumps({b"data": data.reshape(n, 3072).astype(np.uint8), b"labels": labels})


def tiny_cifar(tmp_path: Path) -> Path:
    batches = {f"data_batch_{i}": cifar_batch([i, i + 1, (i + 2) % 10]) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch([0, 9])
    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


@pytest.mark.parametrize("where", ["archive", "folder", "root"])
def test_cifar_tiny_archive(tmp_path, monkeypatch, where):
    archive = tiny_cifar(tmp_path)
    if where == "archive":
        cfg = DataConfig(name="cifar10", file=str(archive), normalize="none")
    elif where == "folder":
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path / "x", filter="data")
        cfg = DataConfig(name="cifar10", file=str(tmp_path / "x" / "cifar-10-batches-py"),
                         normalize="none")
    else:
        (tmp_path / "root" / "cifar10").mkdir(parents=True)
        archive.rename(tmp_path / "root" / "cifar10" / archive.name)
        monkeypatch.setitem(sources.CHECKSUMS, "cifar10", {
            archive.name: download.md5sum(tmp_path / "root" / "cifar10" / archive.name)})
        cfg = DataConfig(name="cifar10", root=str(tmp_path / "root"), normalize="none",
                         download=False)
    bundle = load_data(cfg, seed=0)
    assert bundle.x_train.shape == (15, 3, 32, 32) and bundle.x_test.shape == (2, 3, 32, 32)
    assert bundle.input_shape == (3, 32, 32)
    assert sorted(bundle.y_train.tolist()) == sorted(sum(([i, i + 1, (i + 2) % 10]
                                                          for i in range(1, 6)), []))
    i = bundle.x_train[:, 0, 0, 0][:, None, None]
    for c in range(3):  # planes R, G, B: channel-first layout
        assert torch.all(bundle.x_train[:, c] == i + 40 * c)
    assert sorted(bundle.y_test.tolist()) == [0, 9]


def test_cifar_wrong_checksum_and_unsafe_pickle(tmp_path):
    archive = tiny_cifar(tmp_path / "root" / "cifar10")
    assert archive.is_file()
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: checksum mismatch"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "root"), download=False), seed=0)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "evil"
    folder.mkdir()
    for name in (*formats.CIFAR_TRAIN, formats.CIFAR_TEST):
        (folder / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR-10 batch.*refusing"):
        load_data(DataConfig(name="cifar10", file=str(folder)), seed=0)


def test_corrupted_cifar_archive_is_a_one_line_error(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tiny_cifar(tmp_path).read_bytes()[:400])
    for path in (junk, truncated):
        with pytest.raises(DataError) as info:
            load_data(DataConfig(name="cifar10", file=str(path)), seed=0)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message, message
