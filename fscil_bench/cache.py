"""Checksummed cache entries, atomic writes and file locks: the one place files are made safe.

A *checked entry* is a file ``<name>`` plus a sidecar ``<name>.sha256`` holding the file's
sha256. :func:`write_checked` writes the file under a temporary name, fsyncs it, records its
digest and renames it into place; :func:`verified` reads the sidecar back and checks it. A
missing, truncated or altered entry therefore reads as absent, and the caller rebuilds it;
an interrupted write never leaves a half-written entry behind. Arrays (``.npz``), decoded image
stores (``.npy``, memory-mapped) and model weights (``.pt``) are all checked entries.
:func:`exclusive_lock` lets one process build an entry while the others that need it wait for it
instead of building it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict ordering."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextlib.contextmanager
def exclusive_lock(path: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) for the block.

    Other processes, or threads, that enter ``exclusive_lock`` on the same path wait until it is
    released; ``on_wait`` is told once when that happens. The operating system releases the lock
    when its holder exits, even when killed, so a crashed holder never blocks the others. On
    platforms without ``fcntl`` (Windows) the block runs without a lock. Over a network file
    system the lock holds as far as that file system supports ``flock``.
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks: concurrent builders each build, writes stay atomic
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another process that holds {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sidecar(path: Path) -> Path:
    """The digest file of a checked entry: ``<name>.sha256`` beside ``<name>``."""
    return path.with_name(path.name + ".sha256")


def write_checked(path: Path, write: Callable[[Path], None]) -> str:
    """Create the checked entry ``path``: ``write(tmp)`` fills a temporary file in the same
    folder (its name keeps ``path``'s suffix, so writers that append one are satisfied), which is
    fsynced, digested and renamed into place; then the sidecar is written. Returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    atomic_write_text(sidecar(path), digest + "\n")
    return digest


def verified(path: Path) -> bool:
    """Whether the checked entry ``path`` exists and matches the digest in its sidecar."""
    path = Path(path)
    digest = sidecar(path)
    if not path.is_file() or not digest.is_file():
        return False
    try:
        return sha256_file(path) == digest.read_text().strip()
    except OSError:
        return False


def remove_checked(path: Path) -> None:
    """Delete a checked entry and its sidecar (either may be missing)."""
    Path(path).unlink(missing_ok=True)
    sidecar(Path(path)).unlink(missing_ok=True)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` to the checked entry ``path`` (``.npz``, uncompressed); return its sha256."""
    return write_checked(Path(path), lambda tmp: np.savez(tmp, **arrays))


def load_arrays(path: Path, mmap: bool = False) -> dict[str, np.ndarray] | None:
    """Read a checked entry written by :func:`save_arrays`; ``None`` if absent or corrupt."""
    if not verified(path):
        return None
    try:
        with np.load(path, mmap_mode="r" if mmap else None) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None
