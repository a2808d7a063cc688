"""Checksummed, atomically written array caches.

A cache entry is one ``.npz`` file plus a ``.sha256`` sidecar holding its digest. Readers verify
the digest; a missing, truncated or altered file reads as absent, so the caller rebuilds it.
Writers write to a temporary file and rename it into place, so an interrupted write never
leaves a half-written entry behind. :func:`exclusive_lock` lets one process build an entry
while the others that need it wait for it instead of building it too.
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


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` to ``path`` (``.npz``, uncompressed) atomically; return its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(path.with_suffix(path.suffix + ".sha256"), digest + "\n")
    return digest


def load_arrays(path: Path, mmap: bool = False) -> dict[str, np.ndarray] | None:
    """Read a cache entry written by :func:`save_arrays`; ``None`` if absent or corrupt."""
    path = Path(path)
    sidecar = path.with_suffix(path.suffix + ".sha256")
    if not path.exists() or not sidecar.exists():
        return None
    if sha256_file(path) != sidecar.read_text().strip():
        return None
    try:
        with np.load(path, mmap_mode="r" if mmap else None) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None
