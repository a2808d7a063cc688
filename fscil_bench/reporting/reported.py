"""Published numbers (``fscil_bench/reported_results.json``) and the measured-vs-reported check.

Each entry names a benchmark family (``cifar100``, ``mini_imagenet``, ``cub200``), a method,
the preset that claims to reproduce it, the source, and the per-session accuracy in percent
(``average`` optional: the mean of ``accuracy`` otherwise). An optional ``tolerance`` (points)
overrides :data:`DEFAULT_TOLERANCE` for that entry; an optional ``track`` (default ``scratch``,
see :mod:`fscil_bench.results.tracks`) puts it in that track's table only.

A measured row reproduces an entry when both ``|last_measured - last_reported|`` and
``|avg_measured - avg_reported|`` are at most the tolerance (mean over seeds, in points).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

#: Largest |measured - reported| (accuracy points) for last and average accuracy that passes.
DEFAULT_TOLERANCE = 2.0


@dataclass(frozen=True)
class ReportedEntry:
    family: str
    method: str
    preset: str
    source: str
    accuracy: tuple[float, ...]  # percent, one per session
    average: float  # percent
    tolerance: float
    track: str = "scratch"

    @property
    def last(self) -> float:
        return self.accuracy[-1]

    @property
    def pd(self) -> float:
        return self.accuracy[0] - self.accuracy[-1]


@dataclass(frozen=True)
class Comparison:
    """Measured minus reported, in accuracy points, and whether it is within tolerance."""

    delta_last: float
    delta_avg: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return abs(self.delta_last) <= self.tolerance and abs(self.delta_avg) <= self.tolerance


def load_reported(path: str | Path | None = None) -> list[ReportedEntry]:
    """The entries of ``path`` (default: the file shipped with the package), in file order."""
    text = Path(path).read_text() if path else files("fscil_bench.reporting").joinpath("reported_results.json").read_text()
    entries = []
    for e in json.loads(text):
        accuracy = tuple(float(a) for a in e["accuracy"])
        average = float(e["average"]) if e.get("average") is not None else sum(accuracy) / len(accuracy)
        entries.append(ReportedEntry(e["benchmark"], e["method"], e["preset"], e["source"], accuracy, average,
                                     float(e.get("tolerance", DEFAULT_TOLERANCE)), str(e.get("track", "scratch"))))
    return entries


def for_family(entries: list[ReportedEntry], family: str, track: str = "scratch") -> list[ReportedEntry]:
    """The entries of one benchmark family and track, sorted by (method, preset, source)."""
    return sorted((e for e in entries if e.family == family and e.track == track),
                  key=lambda e: (e.method, e.preset, e.source))


def compare(entry: ReportedEntry, last_mean: float, avg_mean: float) -> Comparison | None:
    """Compare measured means (fractions in [0, 1]) with ``entry``; ``None`` without measurements."""
    if math.isnan(last_mean) or math.isnan(avg_mean):
        return None
    return Comparison(100 * last_mean - entry.last, 100 * avg_mean - entry.average, entry.tolerance)
