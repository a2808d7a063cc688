"""Read the results store and aggregate records per benchmark and per (method, preset).

Each completed record contributes one value per summary metric (see :data:`SUMMARY_KEYS`) and
its per-session curves; a failed record contributes its failure; a seed that other rows of
the same benchmark and preset have but this row lacks is listed as missing. Nothing is
dropped silently: :class:`MethodRow` keeps all three kinds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store import ResultsStore

NAN = float("nan")

#: Summary metrics read from a completed record: key -> (metrics key, index into a per-session list or None).
METRIC_SOURCES: dict[str, tuple[str, int | None]] = {
    "avg": ("avg_acc", None),
    "last": ("last_acc", None),
    "pd": ("pd", None),
    "base_last": ("base_acc", -1),
    "novel_last": ("novel_acc", -1),
    "hm_last": ("hm", -1),
    "forget_max": ("forgetting_max", None),
    "forget_init": ("forgetting_initial", None),
}
#: Neural-collapse diagnostics at the last session (from the record's optional ``diagnostics``).
DIAGNOSTIC_KEYS = ("nc1_last", "equiang_last", "align_base_last")
SUMMARY_KEYS = tuple(METRIC_SOURCES) + DIAGNOSTIC_KEYS
#: Per-session curves kept for the plots: name -> one list per completed seed.
CURVES = ("session_acc", "base_acc", "novel_acc", "nc1", "align_base")


def _float(value: Any) -> float:
    """A record number as a float; ``None`` (JSON for "undefined") becomes NaN."""
    return NAN if value is None else float(value)


@dataclass
class MethodRow:
    """Every record of one (method, preset) on one benchmark."""

    method: str
    preset: str
    oracle: bool = False
    extra_data: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # completed seeds
    failed: dict[int, str] = field(default_factory=dict)  # seed -> why
    missing: list[int] = field(default_factory=list)  # seeds other rows of this preset have
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # key -> one per completed seed
    curves: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    matrices: list[np.ndarray] = field(default_factory=list)  # A[t][g] per completed seed
    seconds: list[float] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method} [{self.preset}]"

    def mean(self, key: str) -> float:
        return mean_std(self.values.get(key, []))[0]

    def mean_curve(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sample std over seeds of a per-session curve (NaN where no seed has a value)."""
        return nan_mean_std_rows(self.curves.get(name, []))

    def mean_matrix(self) -> np.ndarray | None:
        if not self.matrices:
            return None
        return nan_mean_std_rows([m.ravel() for m in self.matrices])[0].reshape(self.matrices[0].shape)


@dataclass
class BenchmarkResults:
    """All rows of one benchmark id (``name@version``) and the raw records, for provenance."""

    id: str
    family: str
    rows: dict[tuple[str, str], MethodRow]
    records: list[dict[str, Any]]

    @property
    def stem(self) -> str:
        """File-name stem: ``glyphs100@1`` -> ``glyphs100-v1``."""
        return self.id.replace("@", "-v")

    @property
    def num_sessions(self) -> int:
        return max((len(c) for r in self.rows.values() for c in r.curves.get("session_acc", [])), default=0)


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


def diagnostics_summary(record: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Last-session diagnostics and the NC1 / base-alignment curves of a record.

    ``diagnostics`` is optional (absent in older records, ``null`` for methods without
    ``embed``); then every value is NaN and the curves are empty.
    """
    diag = record.get("diagnostics")
    sessions = diag.get("sessions") if isinstance(diag, dict) else None
    if not sessions:
        return {k: NAN for k in DIAGNOSTIC_KEYS}, {"nc1": [], "align_base": []}

    def base_alignment(entry: dict[str, Any]) -> float:
        alignment = entry.get("alignment")
        return _float(alignment[0]) if alignment else NAN

    last = sessions[-1]
    summary = {"nc1_last": _float(last.get("nc1")), "equiang_last": _float(last.get("equiangularity")),
               "align_base_last": base_alignment(last)}
    curves = {"nc1": [_float(s.get("nc1")) for s in sessions], "align_base": [base_alignment(s) for s in sessions]}
    return summary, curves


def _failure(record: dict[str, Any]) -> str:
    err = record.get("error") or {}
    return f"{err.get('type', 'error')} in session {err.get('session')}"


def _add(row: MethodRow, record: dict[str, Any]) -> None:
    method = record["method"]
    row.oracle = row.oracle or bool(method.get("oracle"))
    extra = method.get("extra_data")
    for item in extra if isinstance(extra, list) else [extra] if extra else []:
        if str(item) not in row.extra_data:
            row.extra_data.append(str(item))
    seed = int(record["seed"])
    if record.get("status") != "completed" or not record.get("metrics"):
        row.failed[seed] = _failure(record) if record.get("status") != "completed" else "no metrics in the record"
        return
    row.seeds.append(seed)
    m = record["metrics"]
    for key, (name, index) in METRIC_SOURCES.items():
        value = m.get(name)
        if index is not None:
            value = value[index] if value else None
        row.values[key].append(_float(value))
    diag, diag_curves = diagnostics_summary(record)
    for key, value in diag.items():
        row.values[key].append(value)
    for name in ("session_acc", "base_acc", "novel_acc"):
        row.curves[name].append([_float(v) for v in m.get(name) or []])
    for name, curve in diag_curves.items():
        row.curves[name].append(curve)
    if m.get("acc_matrix"):
        row.matrices.append(np.array([[_float(v) for v in r] for r in m["acc_matrix"]], dtype=float))
    timing = record.get("timing") or {}
    row.seconds.append(_float(timing.get("total_seconds")))
    row.fit_seconds.append(float(sum(timing.get("fit_seconds") or [])) if timing.get("fit_seconds") else NAN)
    row.eval_seconds.append(float(sum(timing.get("eval_seconds") or [])) if timing.get("eval_seconds") else NAN)


def _mark_missing(rows: dict[tuple[str, str], MethodRow]) -> None:
    """A seed is missing from a row when another row with the same preset has a record for it."""
    by_preset: dict[str, set[int]] = defaultdict(set)
    for (_, preset), row in rows.items():
        by_preset[preset] |= set(row.seeds) | set(row.failed)
    for (_, preset), row in rows.items():
        row.missing = sorted(by_preset[preset] - set(row.seeds) - set(row.failed))


def collect_records(records: Iterable[dict[str, Any]]) -> dict[str, BenchmarkResults]:
    """Group records by benchmark id, then by (method, preset); seeds in ascending order."""
    ordered = sorted(records, key=lambda r: (r["benchmark"]["id"], r["method"]["name"], r["preset"], int(r["seed"])))
    results: dict[str, BenchmarkResults] = {}
    for rec in ordered:
        bench_id = rec["benchmark"]["id"]
        family = rec["benchmark"].get("family") or bench_id.split("@")[0]
        bench = results.setdefault(bench_id, BenchmarkResults(bench_id, family, {}, []))
        bench.records.append(rec)
        key = (rec["method"]["name"], rec["preset"])
        _add(bench.rows.setdefault(key, MethodRow(*key)), rec)
    for bench in results.values():
        _mark_missing(bench.rows)
    return dict(sorted(results.items()))


def collect(store: ResultsStore) -> dict[str, BenchmarkResults]:
    """:func:`collect_records` over every readable record of ``store``."""
    return collect_records(rec for _, rec in store.records())
