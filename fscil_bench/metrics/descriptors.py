"""Every number a record and a leaderboard carry, described once.

A :class:`MetricDescriptor` gives a metric its key (its one name, from the record to the report's
column and CSV header), its title, its definition, the direction that is better, its unit, its
shape (one value per run, one per session, or the session x group matrix), where it comes from,
and how it is computed. :data:`METRICS` is the table that the record's ``metrics``, the
leaderboard's columns, its CSV and its Definitions section are all generated from.

Sources:

* ``predictions``: computed from a run's saved per-sample predictions and the test labels
  (:class:`RunOutputs`). The report recomputes these from ``predictions.npz``, so a metric added
  to the table appears for runs recorded before it existed, and a record whose stored numbers
  disagree with its own predictions is caught.
* ``diagnostics``: the neural-collapse diagnostics, computed at run time from the method's test
  features (which are not saved) and stored in the record.
* ``timing``: wall time from the record.

Adding a prediction-based metric is one entry in :data:`METRICS` (with its function).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from fscil_bench.metrics.fscil import (
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    average_harmonic_mean,
    base_novel_accuracy,
    class_wise_base_novel,
    forgetting_initial_per_session,
    forgetting_max_per_session,
    gacc_alphas,
    gacc_auc,
    generalised_accuracy,
    last_accuracy,
    performance_drop,
    session_accuracies,
)
from fscil_bench.metrics.inputs import NAN, check_groups, json_float

UNITS = ("percent", "number", "seconds", "count")
SHAPES = ("run", "session", "matrix", "alpha")
SOURCES = ("predictions", "diagnostics", "timing")


@dataclass
class RunOutputs:
    """What a run's metrics are computed from.

    Attributes:
        labels: per session ``t``, the true labels of the test samples evaluated after ``t``
            (every test sample whose label is below ``num_seen(t)``, in test-set order).
        preds: per session, the predicted labels of the same samples.
        groups: ``[start, stop)`` class range introduced by each session (group 0: the base classes).
        diagnostics: per evaluated session, the neural-collapse diagnostics stored in the record
            (None when the method exposes no features).
        seconds: the run's total wall time, from the record.
    """

    labels: Sequence[np.ndarray]
    preds: Sequence[np.ndarray]
    groups: Sequence[tuple[int, int]]
    diagnostics: list[dict[str, Any]] | None = None
    seconds: float | None = None

    @classmethod
    def from_arrays(cls, test_labels: np.ndarray, preds: Sequence[np.ndarray], groups: Sequence[tuple[int, int]],
                    **kwargs: Any) -> RunOutputs:
        """Per-session labels cut from the whole test set's labels (as the runner evaluates them)."""
        test_labels = np.asarray(test_labels)
        checked = check_groups(groups)
        labels = [test_labels[test_labels < checked[t][1]] for t in range(len(preds))]
        return cls(labels, list(preds), checked, **kwargs)

    @cached_property
    def matrix(self) -> np.ndarray:
        return accuracy_matrix(self.labels, self.preds, self.groups)

    @cached_property
    def accuracies(self) -> list[float]:
        self.matrix  # noqa: B018 - validates labels, predictions and groups first
        return session_accuracies(self.labels, self.preds)

    @cached_property
    def base_novel(self) -> list[tuple[float, float, float]]:
        """``(base, novel, harmonic mean)`` accuracy per session."""
        num_base = self.groups[0][1] - self.groups[0][0]
        return [base_novel_accuracy(y, p, num_base) for y, p in zip(self.labels, self.preds)]

    @cached_property
    def class_wise(self) -> list[tuple[float, float, float]]:
        """Class-wise ``(base, novel, harmonic mean)`` accuracy per session."""
        num_base = self.groups[0][1] - self.groups[0][0]
        return [class_wise_base_novel(y, p, num_base) for y, p in zip(self.labels, self.preds)]

    @cached_property
    def gacc(self) -> list[float]:
        """``gAcc(alpha)`` for alpha = 0 .. floor(B/W) (:func:`~fscil_bench.metrics.fscil.gacc_alphas`)."""
        return generalised_accuracy(self.matrix, gacc_alphas(self.groups))

    def diagnostic(self, name: str) -> list[float]:
        """A stored diagnostic per session (NaN where absent); ``align_base`` is the base group's alignment."""
        out = []
        for entry in self.diagnostics or []:
            if name == "align_base":
                value = (entry.get("alignment") or [None])[0]
            else:
                value = entry.get(name)
            out.append(NAN if value is None else float(value))
        return out


@dataclass(frozen=True)
class MetricDescriptor:
    """One metric: its one name, how it reads, what it means and how it is computed.

    Attributes:
        key: the metric's name in records, tables, CSV headers and code.
        title: its column title.
        definition: one sentence, with its formula.
        direction: "higher" or "lower" is better, or None (not ranked).
        unit: "percent" (a fraction shown x100), "number", "seconds" or "count".
        shape: "run" (one value), "session" (one per session), "matrix" (``A[t][g]``) or "alpha"
            (one per alpha of gAcc's grid, 0 .. floor(B/W)).
        source: "predictions", "diagnostics" or "timing" (see the module docstring).
        compute: the value from a :class:`RunOutputs` (NaN when undefined).
        column: shown as a leaderboard column (run-shaped metrics only).
    """

    key: str
    title: str
    definition: str
    direction: str | None
    unit: str
    shape: str
    source: str
    compute: Callable[[RunOutputs], Any] = field(repr=False)
    column: bool = False

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower", None) or self.unit not in UNITS or self.shape not in SHAPES \
                or self.source not in SOURCES:
            raise ValueError(f"metric {self.key!r}: bad direction, unit, shape or source")
        if self.column and self.shape != "run":
            raise ValueError(f"metric {self.key!r}: only run-shaped metrics are columns")

    @property
    def from_predictions(self) -> bool:
        return self.source == "predictions"


def _last(values: Sequence[float]) -> float:
    return float(values[-1]) if len(values) else NAN


METRICS: tuple[MetricDescriptor, ...] = (
    MetricDescriptor(
        "session_acc", "A_t", "A_t: sample-weighted top-1 accuracy on the test samples of all classes seen after "
        "session t.", "higher", "percent", "session", "predictions", lambda r: r.accuracies),
    MetricDescriptor(
        "avg", "Avg", "Average accuracy: mean of A_t over all sessions t = 0..T (base session included).",
        "higher", "percent", "run", "predictions", lambda r: average_accuracy(r.accuracies), column=True),
    MetricDescriptor(
        "last", "Last", "Last-session accuracy: A_T, accuracy on all classes after the final session.",
        "higher", "percent", "run", "predictions", lambda r: last_accuracy(r.accuracies), column=True),
    MetricDescriptor(
        "pd", "PD", "Performance drop: PD = A_0 - A_T (base-session accuracy minus last-session accuracy).",
        "lower", "percent", "run", "predictions", lambda r: performance_drop(r.accuracies), column=True),
    MetricDescriptor(
        "base_acc", "Base", "Base accuracy per session: top-1 accuracy on the test samples of the session-0 (base) "
        "classes.", "higher", "percent", "session", "predictions", lambda r: [b for b, _, _ in r.base_novel]),
    MetricDescriptor(
        "novel_acc", "Novel", "Novel accuracy per session: pooled, sample-weighted top-1 accuracy on the test "
        "samples of all classes introduced after session 0 (undefined at session 0).", "higher", "percent",
        "session", "predictions", lambda r: [n for _, n, _ in r.base_novel]),
    MetricDescriptor(
        "hm", "HM", "Harmonic mean per session of base (a) and novel (b) accuracy: 2ab/(a+b); 0 if both are 0.",
        "higher", "percent", "session", "predictions", lambda r: [h for _, _, h in r.base_novel]),
    MetricDescriptor(
        "base_last", "Base (last)", "Base accuracy after the last session.", "higher", "percent", "run",
        "predictions", lambda r: r.base_novel[-1][0] if r.base_novel else NAN, column=True),
    MetricDescriptor(
        "novel_last", "Novel (last)", "Novel accuracy after the last session.", "higher", "percent", "run",
        "predictions", lambda r: r.base_novel[-1][1] if r.base_novel else NAN, column=True),
    MetricDescriptor(
        "hm_last", "HM (last)", "Harmonic mean of base and novel accuracy after the last session.", "higher",
        "percent", "run", "predictions", lambda r: r.base_novel[-1][2] if r.base_novel else NAN, column=True),
    MetricDescriptor(
        "hm_class_wise", "HM (class-wise)", "Class-wise harmonic mean per session t >= 1 (OrCo, CVPR 2024): "
        "2ab/(a+b) with a the mean per-class accuracy over the base classes and b the mean per-class accuracy over "
        "every novel class seen so far (each class weighs the same, unlike HM); undefined at session 0.", "higher",
        "percent", "session", "predictions", lambda r: [h for _, _, h in r.class_wise]),
    MetricDescriptor(
        "hm_avg", "HM avg", "Average harmonic mean (OrCo's headline): mean of the class-wise harmonic mean over the "
        "incremental sessions t = 1..T (session 0 excluded).", "higher", "percent", "run", "predictions",
        lambda r: average_harmonic_mean([h for _, _, h in r.class_wise]), column=True),
    MetricDescriptor(
        "gacc", "gAcc(alpha)", "Generalised average accuracy (Tang et al., ECCV 2024) for alpha = 0, 1, ..., "
        "floor(B/W) (B base classes, W ways): gAcc(alpha) = mean over sessions i = 0..T of g_i(alpha), "
        "g_i(alpha) = (alpha A[i][0] + sum_{j=1..i} A[i][j]) / (alpha + i) for i >= 1 and g_0 = A[0][0]: each "
        "session's per-task accuracies with the base task weighted alpha and every incremental task 1. The official "
        "code (iSEE-Laboratory/Revisting_FSCIL models/metric.py) rounds per-task accuracies to 0.1 point and counts "
        "g_0(0) as 0; we do neither.", "higher", "percent", "alpha", "predictions", lambda r: r.gacc),
    MetricDescriptor(
        "gacc_1", "gAcc(1)", "gAcc at alpha = 1: the mean over sessions of the plain mean of the per-task "
        "accuracies (the base task counts as one task).", "higher", "percent", "run", "predictions",
        lambda r: r.gacc[1] if len(r.gacc) > 1 else NAN, column=True),
    MetricDescriptor(
        "gacc_auc", "gAcc AUC", "Area under gAcc(alpha) over alpha = 0..floor(B/W) by the trapezoid rule, divided by "
        "floor(B/W): the curve's mean height (as in the official code); undefined when floor(B/W) = 0.", "higher",
        "percent", "run", "predictions", lambda r: gacc_auc(r.gacc, gacc_alphas(r.groups)), column=True),
    MetricDescriptor(
        "acc_matrix", "A[t][g]", "A[t][g]: top-1 accuracy after session t on the test samples of the classes "
        "introduced in session g (g <= t; empty above the diagonal).", "higher", "percent", "matrix",
        "predictions", lambda r: r.matrix),
    MetricDescriptor(
        "forgetting_max", "Forget (max)", "Max-based forgetting after the last session: mean over g < T of "
        "(max_{t in [g, T-1]} A[t][g] - A[T][g]).", "lower", "percent", "run", "predictions",
        lambda r: _last(forgetting_max_per_session(r.matrix)), column=True),
    MetricDescriptor(
        "forgetting_initial", "Forget (init)", "Initial-based forgetting after the last session: mean over g < T "
        "of (A[g][g] - A[T][g]).", "lower", "percent", "run", "predictions",
        lambda r: _last(forgetting_initial_per_session(r.matrix)), column=True),
    MetricDescriptor(
        "bwt", "BWT", "Backward transfer after the last session: BWT = mean over g < T of (A[T][g] - A[g][g]) "
        "= -(initial-based forgetting).", "higher", "percent", "run", "predictions",
        lambda r: backward_transfer(r.matrix)),
    MetricDescriptor(
        "forgetting_max_per_session", "Forget (max) per session", "Max-based forgetting evaluated after each "
        "session t: mean over g < t of (max_{t' in [g, t-1]} A[t'][g] - A[t][g]); undefined at t = 0.",
        "lower", "percent", "session", "predictions", lambda r: forgetting_max_per_session(r.matrix)),
    MetricDescriptor(
        "forgetting_initial_per_session", "Forget (init) per session", "Initial-based forgetting evaluated after "
        "each session t: mean over g < t of (A[g][g] - A[t][g]); undefined at t = 0.", "lower", "percent",
        "session", "predictions", lambda r: forgetting_initial_per_session(r.matrix)),
    MetricDescriptor(
        "num_test_samples", "Test samples", "Number of test samples evaluated after each session t (labels below "
        "num_seen(t)).", None, "count", "session", "predictions", lambda r: [len(y) for y in r.labels]),
    MetricDescriptor(
        "nc1", "NC1", "NC1 per session: tr(Sigma_W Sigma_B^+) / C on the test features of the C seen classes "
        "(within-class over between-class variability; lower = more collapsed).", "lower", "number", "session",
        "diagnostics", lambda r: r.diagnostic("nc1")),
    MetricDescriptor(
        "nc1_last", "NC1 (last)", "NC1 after the last session.", "lower", "number", "run", "diagnostics",
        lambda r: _last(r.diagnostic("nc1")), column=True),
    MetricDescriptor(
        "equiangularity", "Equiangularity", "Equiangularity per session: normalised Frobenius distance of the "
        "cosine Gram matrix of the centred class means from the simplex-ETF Gram (lower = closer to an ETF).",
        "lower", "number", "session", "diagnostics", lambda r: r.diagnostic("equiangularity")),
    MetricDescriptor(
        "equiang_last", "Equiang. (last)", "Equiangularity after the last session.", "lower", "number", "run",
        "diagnostics", lambda r: _last(r.diagnostic("equiangularity")), column=True),
    MetricDescriptor(
        "align_base", "Align base", "Base-class alignment per session: mean cosine between each base class's "
        "test-feature mean and its classifier vector or prototype (higher = better aligned).", "higher", "number",
        "session", "diagnostics", lambda r: r.diagnostic("align_base")),
    MetricDescriptor(
        "align_base_last", "Align base (last)", "Base-class alignment after the last session.", "higher", "number",
        "run", "diagnostics", lambda r: _last(r.diagnostic("align_base")), column=True),
    MetricDescriptor(
        "seconds", "Time (s)", "Wall time of the whole run (every session's training and evaluation), in seconds; "
        "not ranked.", None, "seconds", "run", "timing",
        lambda r: NAN if r.seconds is None else float(r.seconds), column=True),
)

#: Metric names of records written before schema version 2, mapped to today's keys.
LEGACY_KEYS = {"avg_acc": "avg", "last_acc": "last"}


def metric(key: str) -> MetricDescriptor:
    """The descriptor of ``key``."""
    for m in METRICS:
        if m.key == key:
            return m
    raise KeyError(f"unknown metric {key!r}; known: {', '.join(m.key for m in METRICS)}")


def to_json(value: Any) -> Any:
    """A metric value as JSON: NaN -> None, arrays -> nested lists of floats."""
    if isinstance(value, np.ndarray):
        return [to_json(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return json_float(value)


def compute_metrics(run: RunOutputs, source: str | None = None,
                    metrics: Sequence[MetricDescriptor] = METRICS) -> dict[str, Any]:
    """Every metric of ``metrics`` (those of ``source`` when given) as JSON-ready values."""
    return {m.key: to_json(m.compute(run)) for m in metrics if source is None or m.source == source}


def summarize(labels_per_session: Sequence[np.ndarray], preds_per_session: Sequence[np.ndarray],
              groups: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Every prediction-based metric of one run, as a JSON-serialisable dict keyed by metric key
    (NaN written as ``None``). Raises ``ValueError`` on inputs :func:`accuracy_matrix` rejects."""
    run = RunOutputs(labels_per_session, preds_per_session, check_groups(groups))
    return compute_metrics(run, source="predictions")


def same_value(a: Any, b: Any, tol: float = 1e-9) -> bool:
    """Whether two JSON metric values agree (None equals NaN; numbers within ``tol``)."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
            same_value(x, y, tol) for x, y in zip(a, b))
    fa = NAN if a is None else float(a)
    fb = NAN if b is None else float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return abs(fa - fb) <= tol


def disagreements(stored: dict[str, Any], recomputed: dict[str, Any]) -> list[str]:
    """Keys whose stored value (legacy names mapped) differs from the value recomputed from the predictions."""
    out = []
    for key, value in stored.items():
        key = LEGACY_KEYS.get(key, key)
        if key in recomputed and not same_value(value, recomputed[key]):
            out.append(key)
    return out
