"""The data folder, the cache folder, checksummed atomic downloads and atomic cache writes.

Datasets are looked for in the data folder (:func:`data_root`) and downloaded there when
missing. Files sgdlab generates (the MNIST-1D arrays) go to the cache folder
(:func:`cache_root`) and never into a data folder the user named.

Downloads go through pooch (``pooch.retrieve`` with the official md5): each file lands in
a temporary file next to its destination, is verified and only then moved into place, so
concurrent sweep workers and interrupted downloads never leave a partial file under the
final name. Mirrors are tried in order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sgdlab.errors import DataError

log = logging.getLogger(__name__)
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def data_root(root: str = "") -> Path:
    """``root`` if given, else ``$SGDLAB_DATA``, else the cache folder."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("SGDLAB_DATA"):
        return Path(os.environ["SGDLAB_DATA"]).expanduser()
    return cache_root()


def cache_root() -> Path:
    """``$SGDLAB_CACHE``, else ``$XDG_CACHE_HOME/sgdlab``, else ``~/.cache/sgdlab``."""
    if os.environ.get("SGDLAB_CACHE"):
        return Path(os.environ["SGDLAB_CACHE"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "sgdlab"


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, md5: str) -> None:
    """Raise DataError naming ``path`` unless its md5 is ``md5``."""
    got = md5sum(path)
    if got != md5:
        raise DataError(
            f"{path}: checksum mismatch (md5 {got}, expected {md5});"
            " delete the file to download it again"
        )


def open_url(url: str, timeout: float) -> BinaryIO:
    """The network function (tests replace it): a readable binary stream for ``url``."""
    request = urllib.request.Request(url, headers={"User-Agent": "sgdlab"})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) URLs only)


def download(urls: list[str], dest: Path, md5: str, timeout: float = TIMEOUT_S) -> Path:
    """Download the first reachable of ``urls`` (mirrors of one file) to ``dest``, verified.

    Network errors move on to the next mirror; a checksum mismatch deletes the temporary file
    and raises DataError naming the URL and the file.
    """
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)  # errors are ours to report, in one line
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest.parent}: cannot create the data folder "
                        f"({exc.strerror or exc})") from None
    errors = []
    for url in urls:
        log.info("downloading %s -> %s", url, dest)

        def fetch(url: str, output: str, _pooch: object) -> None:
            with open_url(url, timeout) as response, open(output, "wb") as f:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)

        try:
            pooch.retrieve(url, known_hash=f"md5:{md5}", fname=dest.name, path=dest.parent,
                           downloader=fetch)
        except ValueError as exc:  # pooch's hash mismatch; its temporary file is gone
            got = str(exc).split("(", 1)[-1].split(")", 1)[0]
            raise DataError(f"{dest}: checksum mismatch for {url} (got {got}, expected md5 "
                            f"{md5}); nothing was saved") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        return dest
    raise DataError(f"{dest}: could not download ({'; '.join(errors)})")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` cache file atomically (temporary file + rename)."""
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def _atomic_write(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
