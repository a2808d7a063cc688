"""The results store: one folder per (benchmark, method, preset, seed) under a runs folder.

Layout: ``<root>/<benchmark>@<version>/<method>/<preset>/seed-<k>/`` holding
``predictions.npz`` (the test labels and each session's per-sample predictions) and
``record.json`` (config, versions, hardware, timings, declared memory, metrics, and the sha256 of
``predictions.npz``). The predictions are written first and the record last, both atomically.
A run is complete only when its record says so *and* the predictions it names are there with
that checksum: a killed run (no record, or a record left from an earlier run beside new
predictions) and a run whose predictions went missing or were damaged are redone on the next
run; a complete one is skipped (unless forced).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fscil_bench.cache import atomic_write_text, load_arrays, save_arrays, sha256_file

#: Version of the record format written now. 2: metrics keyed by their descriptor keys.
SCHEMA_VERSION = 2
#: Record versions this release reads (the report maps version 1's metric names).
READABLE_SCHEMAS = (1, 2)


class StoreError(RuntimeError):
    """The runs folder cannot be used (e.g. not writable)."""


@dataclass(frozen=True)
class RunKey:
    """What identifies a run: two runs with the same key compute the same thing.

    Attributes:
        benchmark: ``name@version``.
        method: the method's registered name.
        preset: the preset's name (a preset changed by overrides carries a digest of them).
        seed: the run's seed.
        split: which few-shot samples the incremental sessions use (0: the standard lists).
        order: which novel classes arrive in which session (0: the standard order).
        track: ``scratch`` (backbones trained on the benchmark alone) or the pretrained weights used.
    """

    benchmark: str
    method: str
    preset: str
    seed: int
    split: int = 0
    order: int = 0
    track: str = "scratch"

    def relative_dir(self) -> Path:
        """``<benchmark>/<method>/<preset>[~<track>]/seed-<k>[-split-<s>][-order-<o>]``."""
        preset = self.preset if self.track == "scratch" else f"{self.preset}~{self.track}"
        leaf = f"seed-{self.seed}" + (f"-split-{self.split}" if self.split else "") + (
            f"-order-{self.order}" if self.order else "")
        return Path(self.benchmark) / self.method / preset / leaf

    def describe(self) -> str:
        """One line naming the run, as logs and summaries print it."""
        extra = "".join(f" {k} {v}" for k, v in (("split", self.split), ("order", self.order)) if v)
        track = "" if self.track == "scratch" else f" [{self.track}]"
        return f"{self.benchmark} {self.method} [{self.preset}]{track} seed {self.seed}{extra}"


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
        """Whether the run's record says completed (in a readable schema) and its predictions are
        there with the checksum the record names."""
        record = self.read(key)
        if not (record and record.get("status") == "completed" and record.get("schema_version") in READABLE_SCHEMAS):
            return False
        return self.predictions(self.run_dir(key) / "record.json", record) is not None

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

    def predictions(self, record_path: Path, record: dict[str, Any] | None = None) -> dict[str, np.ndarray] | None:
        """The saved predictions next to a record; ``None`` if missing or corrupt, or (with
        ``record``) if the record names no checksum or another file's."""
        path = Path(record_path).parent / "predictions.npz"
        if record is not None:
            expected = (record.get("predictions") or {}).get("sha256")
            if not expected or not path.is_file() or sha256_file(path) != expected:
                return None
        return load_arrays(path)


def _warn_unreadable(path: Path, reason: str) -> None:
    print(f"warning: skipped unreadable record {path} ({reason})", file=sys.stderr)
