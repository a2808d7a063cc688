"""The results store: one folder per (benchmark, method, preset, seed) under a runs folder.

Layout: ``<root>/<benchmark>@<version>/<method>/<preset>/seed-<k>/`` holding
``predictions.npz`` (the test labels and each session's per-sample predictions) and
``record.json`` (config, versions, hardware, timings, declared memory, metrics). The record is
written last and atomically, so it marks a finished run: a killed run leaves no record and is
redone; a completed one is skipped on rerun (unless forced).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .data.cache import atomic_write_text, load_arrays, save_arrays

SCHEMA_VERSION = 1


class StoreError(RuntimeError):
    """The runs folder cannot be used (e.g. not writable)."""


@dataclass(frozen=True)
class RunKey:
    benchmark: str  # "name@version"
    method: str
    preset: str
    seed: int

    def relative_dir(self) -> Path:
        return Path(self.benchmark) / self.method / self.preset / f"seed-{self.seed}"


class ResultsStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless records can be written under the root."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"cannot write results to {self.root}: {exc.strerror or exc}") from exc

    def run_dir(self, key: RunKey) -> Path:
        return self.root / key.relative_dir()

    def read(self, key: RunKey) -> dict[str, Any] | None:
        path = self.run_dir(key) / "record.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_complete(self, key: RunKey) -> bool:
        record = self.read(key)
        return bool(record and record.get("status") == "completed" and record.get("schema_version") == SCHEMA_VERSION)

    def write(self, key: RunKey, record: dict[str, Any], predictions: list[np.ndarray], test_labels: np.ndarray) -> Path:
        """Save predictions, then the record (the completion mark). Returns the record's path."""
        folder = self.run_dir(key)
        arrays = {"test_labels": np.asarray(test_labels, dtype=np.int16)}
        arrays.update({f"session_{t}": p for t, p in enumerate(predictions)})
        digest = save_arrays(folder / "predictions.npz", arrays)
        record = {**record, "predictions": {"file": "predictions.npz", "sha256": digest}}
        path = folder / "record.json"
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")
        return path

    def records(self, on_unreadable: Callable[[Path, str], None] | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Every readable record under the root, in a stable order.

        Records are written atomically, so a killed run never leaves half a record; one that
        cannot be read (edited by hand, damaged on disk) is skipped and passed, with the reason,
        to ``on_unreadable`` (default: a ``warning:`` line on stderr), never dropped silently.
        """
        for path in sorted(self.root.glob("*/*/*/seed-*/record.json")):
            try:
                yield path, json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                (on_unreadable or _warn_unreadable)(path, f"{type(exc).__name__}: {exc}")

    def predictions(self, record_path: Path) -> dict[str, np.ndarray] | None:
        """The saved predictions next to a record (``None`` if missing or corrupt)."""
        return load_arrays(record_path.parent / "predictions.npz")


def _warn_unreadable(path: Path, reason: str) -> None:
    print(f"warning: skipped unreadable record {path} ({reason})", file=sys.stderr)


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout holding this package (with '+dirty' if modified), if any."""
    where = path or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Package versions and the code version."""
    import torch
    import torchvision

    from . import __version__

    return {
        "fscil_bench": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }


def hardware(device: str) -> dict[str, Any]:
    import torch

    from . import distributed

    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": distributed.world_size(),  # processes training together (torchrun)
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
