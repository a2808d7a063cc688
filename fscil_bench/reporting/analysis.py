"""What a leaderboard row says beyond its means: spreads by source, paired comparisons, cost.

Everything here works on the completed runs of a row (:attr:`MethodRow.runs`: every seed, split
and order); the statistics are those of :mod:`fscil_bench.reporting.stats`.

* :func:`row_spread`: a metric's mean over every run of the row, its spread over seeds, splits
  and orders separately (each with the other two held fixed) and the total spread, with n.
* :func:`compare_rows`: ``b - a`` for two rows over the runs both completed at the same
  (seed, split, order): the paired t interval over runs, the Wilcoxon p-value, and the bootstrap
  interval over test images (:func:`image_bootstrap`).
* :func:`ties_with`: which rows are statistically indistinguishable from a reference row.
* :func:`ranking_per_schedule`: the rows ranked at each split and order, to see whether
  rankings flip.
* :func:`row_cost`: time, device, peak and declared memory per run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fscil_bench.reporting.collect import MethodRow, RunSample
from fscil_bench.reporting.stats import (
    FACTORS,
    Interval,
    PairedRuns,
    Spread,
    factor_spread,
    paired_runs,
    per_image_difference,
    stratified_bootstrap,
    total_spread,
)

NAN = float("nan")
#: The metrics that the spreads and the paired comparisons are given for.
COMPARED = ("avg", "last")
CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class RowSpread:
    """A metric over every completed run of a row.

    Attributes:
        mean: mean over the runs; total_sd: their sample sd; n: how many.
        by_source: :class:`~fscil_bench.reporting.stats.Spread` per source ("seed", "split", "order").
    """

    mean: float
    total_sd: float
    n: int
    by_source: dict[str, Spread]


def row_spread(row: MethodRow, key: str) -> RowSpread:
    """The spread of metric ``key`` over the row's runs, by source and in total."""
    points = [(tuple(r.coord), r.values.get(key, NAN)) for r in row.runs]
    mean, sd, n = total_spread([v for _, v in points])
    return RowSpread(mean, sd, n, {f: factor_spread(points, f) for f in FACTORS})


#: Per (split, order): the ranked rows in tie groups, best first (:func:`ranking_per_schedule`).
Rankings = dict[tuple[int, int], list[list[MethodRow]]]


def ranking_per_schedule(rows: list[MethodRow], key: str) -> Rankings:
    """Per (split, order) that every ranked row of ``rows`` (not oracle, protocol-clean) has runs
    on: the ranked rows by descending mean of ``key`` over their seeds there, rows whose means tie
    (to 1e-12) grouped together. Empty when fewer than two rows are ranked."""
    ranked = [r for r in rows if not r.oracle and not r.not_clean and r.runs]
    if len(ranked) < 2:
        return {}
    common = set.intersection(*({(c.coord.split, c.coord.order) for c in r.runs} for r in ranked))
    out: Rankings = {}
    for schedule in sorted(common):
        means = {id(r): float(np.mean([x.values[key] for x in r.runs if (x.coord.split, x.coord.order) == schedule]))
                 for r in ranked}
        groups: list[list[MethodRow]] = []
        for r in sorted(ranked, key=lambda r: -means[id(r)]):  # stable: ties keep the leaderboard's order
            if groups and means[id(groups[-1][0])] - means[id(r)] <= 1e-12:
                groups[-1].append(r)
            else:
                groups.append([r])
        out[schedule] = groups
    return out


def design_text(row: MethodRow) -> str:
    """The row's runs, e.g. ``36 runs: 3 seeds x 4 splits x 3 orders`` (the distinct values of
    each; a full product when the count is their product)."""
    coords = [r.coord for r in row.runs]
    if not coords:
        return "0 runs"
    sizes = [len({c[i] for c in coords}) for i in range(3)]
    parts = " x ".join(f"{n} {name}{'s' if n != 1 else ''}" for n, name in zip(sizes, FACTORS))
    return f"{len(coords)} run{'s' if len(coords) != 1 else ''}: {parts}"


def matched_runs(a: MethodRow, b: MethodRow) -> list[tuple[RunSample, RunSample]]:
    """The runs both rows completed at the same (seed, split, order) on the same test images,
    in ascending coordinates."""
    by_coord = {r.coord: r for r in b.runs}
    pairs = []
    for run_a in sorted(a.runs, key=lambda r: r.coord):
        run_b = by_coord.get(run_a.coord)
        if run_b is not None and run_a.correct.shape == run_b.correct.shape and np.array_equal(run_a.labels, run_b.labels):
            pairs.append((run_a, run_b))
    return pairs


@dataclass(frozen=True)
class MetricComparison:
    """``b - a`` for one metric (fractions, like the metrics).

    Attributes:
        runs: the paired comparison over matched runs.
        images: the bootstrap interval over test images (runs held fixed).
    """

    key: str
    runs: PairedRuns
    images: Interval

    @property
    def distinguishable(self) -> bool | None:
        """Whether the difference is significant at the interval's level: the paired t interval
        over runs when there are two or more, else the bootstrap interval over the test images of
        the single run; None without a matched run."""
        if self.runs.n >= 2:
            return self.runs.excludes_zero
        if self.runs.n == 1:
            return self.images.excludes_zero
        return None

    @property
    def test(self) -> str:
        return "paired t over runs" if self.runs.n >= 2 else "bootstrap over test images" if self.runs.n else "none"


def compare_rows(a: MethodRow, b: MethodRow, keys: tuple[str, ...] = COMPARED, confidence: float = CONFIDENCE,
                 resamples: int = RESAMPLES, seed: int = 0) -> dict[str, MetricComparison]:
    """``b - a`` for every metric of ``keys`` (``"avg"``, ``"last"``) over their matched runs."""
    pairs = matched_runs(a, b)
    out = {}
    for key in keys:
        runs = paired_runs([ra.values[key] for ra, _ in pairs], [rb.values[key] for _, rb in pairs], confidence)
        out[key] = MetricComparison(key, runs, image_bootstrap(pairs, key, confidence, resamples, seed))
    return out


def image_bootstrap(pairs: list[tuple[RunSample, RunSample]], key: str, confidence: float = CONFIDENCE,
                    resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The bootstrap interval over test images of the mean difference ``b - a`` in ``key`` over
    ``pairs`` (one resample of the shared test set for every run; classes as strata)."""
    if not pairs:
        return Interval(NAN, NAN, NAN, confidence, resamples)
    sizes = {ra.labels.shape for ra, _ in pairs}
    if len(sizes) != 1:
        raise ValueError(f"runs compared on different test sets (sizes {sorted(sizes)})")
    mean = np.mean([per_image_difference(ra.correct, rb.correct, ra.evaluated, key) for ra, rb in pairs], axis=0)
    # Strata: each image's class. Any run's labels group the images alike (an order only renames classes).
    return stratified_bootstrap(mean, pairs[0][0].labels, confidence, resamples, seed)


@dataclass
class Ties:
    """Each row's comparison with a reference row, for one metric."""

    key: str
    reference: MethodRow | None
    comparisons: dict[tuple[str, str], MetricComparison] = field(default_factory=dict)

    def mark(self, row: MethodRow) -> str:
        """``best`` (the reference), ``yes`` (indistinguishable from it), ``no``, or ``""``
        (oracle, not protocol-clean, or no run shared with the reference)."""
        if self.reference is None or row.oracle or row.not_clean:
            return ""
        if row is self.reference:
            return "best"
        comparison = self.comparisons.get((row.method, row.preset))
        verdict = comparison.distinguishable if comparison else None
        return "" if verdict is None else "no" if verdict else "yes"


def ties_with(rows: list[MethodRow], reference: MethodRow | None, key: str, **kwargs) -> Ties:
    """Every ranked row (not oracle, protocol-clean) compared with ``reference`` on metric ``key``
    (``row - reference``)."""
    ties = Ties(key, reference)
    if reference is None:
        return ties
    for row in rows:
        if row is not reference and not row.oracle and not row.not_clean:
            ties.comparisons[row.method, row.preset] = compare_rows(reference, row, (key,), **kwargs)[key]
    return ties


@dataclass(frozen=True)
class RowCost:
    """Cost per run of a row, means over its completed runs.

    Attributes:
        runs: completed runs.
        devices: distinct devices of those runs.
        fit_seconds, eval_seconds: training and evaluation time of a whole run.
        peak_bytes: peak memory above the run's start; peak_kinds: how it was measured
            (:mod:`fscil_bench.run.peak_memory`); peak_runs: runs that recorded it.
        declared_bytes: the memory the method declares it keeps (``memory().bytes``).
        declared_items: its exemplars and feature vectors, as text.
    """

    runs: int
    devices: list[str]
    fit_seconds: float
    eval_seconds: float
    peak_bytes: float
    peak_kinds: list[str]
    peak_runs: int
    declared_bytes: float
    declared_items: str


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


def row_cost(row: MethodRow) -> RowCost:
    """The cost of ``row`` (NaN where no run recorded a figure)."""
    peaks = [r.peak_memory for r in row.runs if isinstance(r.peak_memory, dict) and r.peak_memory.get("bytes") is not None]
    declared = [r.memory for r in row.runs if isinstance(r.memory, dict) and r.memory.get("declared")]
    items = sorted({f"{int(m.get('exemplars') or 0)} exemplars, {int(m.get('feature_vectors') or 0)} vectors"
                    for m in declared})
    return RowCost(
        runs=len(row.runs),
        devices=sorted({r.device for r in row.runs}),
        fit_seconds=_nanmean([r.fit_seconds for r in row.runs]),
        eval_seconds=_nanmean([r.eval_seconds for r in row.runs]),
        peak_bytes=_nanmean([float(p["bytes"]) for p in peaks]),
        peak_kinds=sorted({str(p.get("kind")) for p in peaks}),
        peak_runs=len(peaks),
        declared_bytes=_nanmean([float(m.get("bytes") or 0) for m in declared]),
        declared_items="; ".join(items),
    )
