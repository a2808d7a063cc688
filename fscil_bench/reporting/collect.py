"""Read the results store and aggregate records per (benchmark, track) and per (method, preset).

Runs of different tracks (:mod:`fscil_bench.results.tracks`: from scratch, or from some pretrained
weights) never share a :class:`BenchmarkResults`, so no table ranks them against each other.

Every metric of :data:`fscil_bench.metrics.descriptors.METRICS` is computed here for each
completed record: the prediction-based ones from the run's own ``predictions.npz`` (never from the
numbers the record stores, which are only checked against them), the diagnostics and the time from
the record. A record whose predictions are missing or corrupt counts as failed; a record whose
stored metrics disagree with its predictions is flagged and its recomputed values are used. A
failed record contributes its failure; a seed that other rows of the same benchmark and preset
have but this row lacks is listed as missing. Nothing is dropped silently.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fscil_bench.metrics.descriptors import (
    METRICS,
    MetricDescriptor,
    RunOutputs,
    compute_metrics,
    disagreements,
)
from fscil_bench.results.store import ResultsStore
from fscil_bench.results.tracks import SCRATCH, overlapping_families, record_track, record_weights

NAN = float("nan")


def _float(value: Any) -> float:
    """A record number as a float; ``None`` (JSON for "undefined") becomes NaN."""
    return NAN if value is None else float(value)


@dataclass
class MethodRow:
    """Every record of one (method, preset) on one benchmark.

    ``values[key]`` holds one entry per completed seed for every metric of :data:`METRICS`: a
    float for run-shaped metrics, a list per session, a matrix.
    """

    method: str
    preset: str
    oracle: bool = False
    extra_data: list[str] = field(default_factory=list)
    not_clean: list[str] = field(default_factory=list)  # why the row's protocol is not clean (not ranked)
    seeds: list[int] = field(default_factory=list)  # completed seeds
    failed: dict[int, str] = field(default_factory=dict)  # seed -> why
    missing: list[int] = field(default_factory=list)  # seeds other rows of this preset have
    flagged: dict[int, str] = field(default_factory=dict)  # seed -> why its stored numbers were not used
    values: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    fit_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method} [{self.preset}]"

    def mean(self, key: str) -> float:
        return mean_std(self.values.get(key, []))[0]

    def curves(self, key: str) -> list[list[float]]:
        """One per-session curve per completed seed (NaN where undefined)."""
        return [[_float(v) for v in curve] for curve in self.values.get(key, [])]

    def mean_curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sample std over seeds of a per-session metric (NaN where no seed has a value)."""
        return nan_mean_std_rows(self.curves(key))

    @property
    def matrices(self) -> list[np.ndarray]:
        return [np.array([[_float(v) for v in r] for r in m], dtype=float) for m in self.values.get("acc_matrix", [])]

    def mean_matrix(self) -> np.ndarray | None:
        matrices = self.matrices
        if not matrices:
            return None
        return nan_mean_std_rows([m.ravel() for m in matrices])[0].reshape(matrices[0].shape)


@dataclass
class BenchmarkResults:
    """All rows of one benchmark id (``name@version``) in one track, and the raw records, for
    provenance; ``weights`` are the distinct pretrained weights its records state, ``overlaps``
    the benchmark family when some of them were trained on data holding its classes."""

    id: str
    family: str
    rows: dict[tuple[str, str], MethodRow]
    records: list[dict[str, Any]]
    track: str = SCRATCH
    weights: list[dict[str, Any]] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``glyphs100@1`` for the from-scratch track, ``glyphs100@1~<track>`` for another."""
        return self.id if self.track == SCRATCH else f"{self.id}~{self.track}"

    @property
    def title(self) -> str:
        return self.id if self.track == SCRATCH else f"{self.id}, track {self.track}"

    @property
    def stem(self) -> str:
        """File-name stem: ``glyphs100@1`` -> ``glyphs100-v1`` (``-<track>`` appended for another track)."""
        return self.id.replace("@", "-v") + ("" if self.track == SCRATCH else f"-{self.track}")

    @property
    def num_sessions(self) -> int:
        return max((len(c) for r in self.rows.values() for c in r.values.get("session_acc", [])), default=0)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of the non-NaN values."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return NAN, NAN
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def nan_mean_std_rows(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise :func:`mean_std` of ragged rows (shorter rows count as NaN at the end)."""
    width = max((len(r) for r in rows), default=0)
    stats = [mean_std([r[i] if i < len(r) else NAN for r in rows]) for i in range(width)]
    return np.array([m for m, _ in stats], dtype=float), np.array([s for _, s in stats], dtype=float)


@dataclass(frozen=True)
class RecordEntry:
    """One record with what the store holds beside it (``predictions`` is None when missing or corrupt)."""

    record: dict[str, Any]
    predictions: dict[str, np.ndarray] | None


def run_outputs(entry: RecordEntry) -> RunOutputs:
    """The record's predictions as :class:`RunOutputs` (raises ``ValueError`` when they do not fit it)."""
    rec, arrays = entry.record, entry.predictions
    sessions = int(rec.get("sessions_done") or 0)
    preds = [arrays[f"session_{t}"] for t in range(sessions)]
    timing = rec.get("timing") or {}
    diag = rec.get("diagnostics")
    return RunOutputs.from_arrays(arrays["test_labels"], preds, rec["benchmark"]["class_groups"],
                                  diagnostics=diag.get("sessions") if isinstance(diag, dict) else None,
                                  seconds=timing.get("total_seconds"))


def _failure(record: dict[str, Any]) -> str:
    err = record.get("error") or {}
    return f"{err.get('type', 'error')} in session {err.get('session')}"


def _add(row: MethodRow, entry: RecordEntry, metrics: Sequence[MetricDescriptor]) -> None:
    record = entry.record
    method = record["method"]
    row.oracle = row.oracle or bool(method.get("oracle"))
    extra = method.get("extra_data")
    run_extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
    items = extra if isinstance(extra, list) else [extra] if extra else []
    for item in [*items, run_extra.get("extra_data")]:  # the method's own, and pretrained weights of this run
        if item and str(item) not in row.extra_data:
            row.extra_data.append(str(item))
    if run_extra.get("not_protocol_clean") and str(run_extra["not_protocol_clean"]) not in row.not_clean:
        row.not_clean.append(str(run_extra["not_protocol_clean"]))
    seed = int(record["seed"])
    if record.get("status") != "completed":
        row.failed[seed] = _failure(record)
        return
    if entry.predictions is None:
        row.failed[seed] = "predictions.npz missing or corrupt"
        return
    try:
        values = compute_metrics(run_outputs(entry), metrics=metrics)
    except (KeyError, ValueError) as exc:
        row.failed[seed] = f"predictions do not fit the record ({exc})"
        return
    wrong = disagreements(record.get("metrics") or {}, values)
    if wrong:
        row.flagged[seed] = "stored " + ", ".join(wrong) + " disagree with its predictions (recomputed values used)"
    row.seeds.append(seed)
    for m in metrics:
        value = values[m.key]
        row.values[m.key].append(_float(value) if m.shape == "run" else value)
    timing = record.get("timing") or {}
    row.fit_seconds.append(float(sum(timing["fit_seconds"])) if timing.get("fit_seconds") else NAN)
    row.eval_seconds.append(float(sum(timing["eval_seconds"])) if timing.get("eval_seconds") else NAN)


def _mark_missing(rows: dict[tuple[str, str], MethodRow]) -> None:
    """A seed is missing from a row when another row with the same preset has a record for it."""
    by_preset: dict[str, set[int]] = defaultdict(set)
    for (_, preset), row in rows.items():
        by_preset[preset] |= set(row.seeds) | set(row.failed)
    for (_, preset), row in rows.items():
        row.missing = sorted(by_preset[preset] - set(row.seeds) - set(row.failed))


def collect_entries(entries: Iterable[RecordEntry], metrics: Sequence[MetricDescriptor] = METRICS
                    ) -> dict[str, BenchmarkResults]:
    """Group records by (benchmark id, track), then by (method, preset); seeds in ascending order.
    The keys are :attr:`BenchmarkResults.key`."""
    def order(e: RecordEntry) -> tuple:
        r = e.record
        return (r["benchmark"]["id"], record_track(r), r["method"]["name"], r["preset"], int(r["seed"]))

    results: dict[str, BenchmarkResults] = {}
    for entry in sorted(entries, key=order):
        rec = entry.record
        bench_id, track = rec["benchmark"]["id"], record_track(rec)
        family = rec["benchmark"].get("family") or bench_id.split("@")[0]
        bench = BenchmarkResults(bench_id, family, {}, [], track)
        bench = results.setdefault(bench.key, bench)
        bench.records.append(rec)
        weights = record_weights(rec)
        if weights and all(w.get("sha256") != weights.get("sha256") for w in bench.weights):
            bench.weights.append(weights)
        bench.overlaps += [f for f in overlapping_families(rec) if f not in bench.overlaps]
        key = (rec["method"]["name"], rec["preset"])
        _add(bench.rows.setdefault(key, MethodRow(*key)), entry, metrics)
    for bench in results.values():
        _mark_missing(bench.rows)
    return dict(sorted(results.items()))


def store_entries(store: ResultsStore) -> Iterable[RecordEntry]:
    """Every readable record of ``store`` with its verified predictions."""
    for path, record in store.records():
        yield RecordEntry(record, store.predictions(Path(path), record))


def collect(store: ResultsStore, metrics: Sequence[MetricDescriptor] = METRICS) -> dict[str, BenchmarkResults]:
    """:func:`collect_entries` over every readable record of ``store``."""
    return collect_entries(store_entries(store), metrics)
