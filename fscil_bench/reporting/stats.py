"""The statistics behind the leaderboard's spreads and paired comparisons, as pure functions.

**Spreads by source.** A method's runs sit on a grid of model seeds x few-shot splits x class
orders. The spread over one source (say, splits) is measured with the other two held fixed:
runs are grouped by their seed and order; within each group of two or more runs the sample
variance over its splits is taken; the groups are pooled by their degrees of freedom::

    sd_split = sqrt( sum_g (n_g - 1) * s_g^2  /  sum_g (n_g - 1) )

(``s_g^2``: sample variance, ddof 1, of the ``n_g`` runs of group ``g``). It answers "how far
does the number move when only the split changes", whether the grid is a full product or varies
one source at a time. The total spread is the sample sd over every run of the row.

**Paired comparison over runs.** Two methods are compared on the runs both completed at the same
(seed, split, order): same base-session seed, same shots, same class order, same test images.
With ``d_k = b_k - a_k`` over those ``n`` runs, the estimate is ``mean(d)`` and its confidence
interval the paired t interval ``mean(d) +- t_{n-1, (1+c)/2} * sd(d)/sqrt(n)``
(:func:`scipy.stats.ttest_rel`), with its two-sided p-value; the Wilcoxon signed-rank test
(:func:`scipy.stats.wilcoxon`, exact for small n, zero differences dropped) gives a p-value that
does not assume normal differences. With identical differences (to 1e-12) the interval is that
value (no spread) and the t p-value is 0 (1 when all are zero); with ``n < 2`` there is no interval.

**Bootstrap over test images.** The finite test set is a source of noise of its own. A run's
accuracy difference is a sum over its test images of per-image contributions
(:func:`per_image_difference`), so the mean difference over several runs is the sum of the
per-image mean contributions: every run of a benchmark is tested on the same images (another
split or order changes the shots and the class ids, not the test images). The images are
resampled with replacement *within each class* (the test set has a fixed number of images per
class), the same resample for every run, and the difference is recomputed for each resample;
the interval is the percentile interval of those resamples. It holds the runs fixed: it says
how much of the difference a finite test set can explain. Seeded, so a report is byte-identical
for the same records.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NAN = float("nan")
FACTORS = ("seed", "split", "order")
#: Differences within this of each other (relative to their size) count as identical: accuracies
#: that are equal fractions can differ in their last bits after subtraction.
SAME = 1e-12


@dataclass(frozen=True)
class Spread:
    """A pooled standard deviation over one source of variance.

    Attributes:
        sd: the pooled sd (NaN when no group has two runs).
        levels: distinct values of the source among the pooled runs (e.g. 3 seeds).
        groups: groups pooled (combinations of the other two sources).
        runs: runs in those groups.
    """

    sd: float
    levels: int
    groups: int
    runs: int


def factor_spread(points: Sequence[tuple[tuple[int, int, int], float]], factor: str) -> Spread:
    """Pooled within-group sd of ``points`` (``((seed, split, order), value)``) over ``factor``
    (``"seed"``, ``"split"`` or ``"order"``), the other two held fixed (module docstring).
    NaN values are left out."""
    axis = FACTORS.index(factor)
    groups: dict[tuple[int, ...], list[tuple[int, float]]] = defaultdict(list)
    for coord, value in points:
        if not math.isnan(value):
            groups[tuple(c for i, c in enumerate(coord) if i != axis)].append((coord[axis], float(value)))
    ss, dof, levels, used, runs = 0.0, 0, set(), 0, 0
    for members in groups.values():
        if len(members) < 2:
            continue
        values = np.array([v for _, v in members])
        ss += float(((values - values.mean()) ** 2).sum())
        dof += len(values) - 1
        levels |= {lvl for lvl, _ in members}
        used, runs = used + 1, runs + len(values)
    return Spread(math.sqrt(ss / dof) if dof else NAN, len(levels), used, runs)


def total_spread(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample sd (ddof 1; NaN for one value) and count of the non-NaN ``values``."""
    arr = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return NAN, NAN, 0
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else NAN, int(arr.size)


@dataclass(frozen=True)
class PairedRuns:
    """The paired comparison of ``b - a`` over ``n`` matched runs (module docstring).

    Attributes:
        n: matched runs.
        mean: mean difference.
        low, high: confidence interval of the mean difference (paired t; NaN when n < 2).
        p_t: two-sided p-value of the paired t-test.
        p_wilcoxon: two-sided p-value of the Wilcoxon signed-rank test (NaN when n < 2 or every
            difference is 0).
        confidence: the interval's confidence level.
    """

    n: int
    mean: float
    low: float
    high: float
    p_t: float
    p_wilcoxon: float
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies strictly on one side of 0 (False without an interval)."""
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)


def paired_runs(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedRuns:
    """Paired t interval and p-values of ``mean(b - a)`` over matched runs."""
    from scipy import stats

    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired samples must be two 1-D arrays of equal length, got {a_arr.shape} and {b_arr.shape}")
    d = b_arr - a_arr
    n = int(d.size)
    if n == 0:
        return PairedRuns(0, NAN, NAN, NAN, NAN, NAN, confidence)
    mean = float(d.mean())
    if n < 2:
        return PairedRuns(n, mean, NAN, NAN, NAN, NAN, confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's notes on small samples, ties and near-constant data
        if np.ptp(d) <= SAME * max(1.0, float(np.abs(d).max())):  # no spread: t would be 0/0 or infinite
            low = high = mean
            p_t = 1.0 if abs(mean) <= SAME else 0.0
        else:
            result = stats.ttest_rel(b_arr, a_arr)
            interval = result.confidence_interval(confidence_level=confidence)
            low, high, p_t = float(interval.low), float(interval.high), float(result.pvalue)
        p_w = float(stats.wilcoxon(d).pvalue) if np.any(np.abs(d) > SAME) else NAN
    return PairedRuns(n, mean, low, high, p_t, p_w, confidence)


def per_image_difference(correct_a: np.ndarray, correct_b: np.ndarray, evaluated: np.ndarray, statistic: str
                         ) -> np.ndarray:
    """Per-image contributions ``c_i`` whose sum is ``statistic(b) - statistic(a)`` for one run.

    ``correct_*`` and ``evaluated`` are ``(sessions, N)`` booleans over the run's test images.
    ``statistic`` is ``"last"`` (``A_T``: ``c_i = (b_Ti - a_Ti) / n_T``) or ``"avg"`` (the mean
    of ``A_t`` over sessions: ``c_i = (1/(T+1)) * sum_t (b_ti - a_ti) / n_t`` over the sessions
    that evaluated image ``i``), with ``n_t`` the images evaluated after session ``t``.
    """
    if correct_a.shape != correct_b.shape or correct_a.shape != evaluated.shape or correct_a.ndim != 2:
        raise ValueError(f"correct_a, correct_b and evaluated must share one (sessions, N) shape, got "
                         f"{correct_a.shape}, {correct_b.shape}, {evaluated.shape}")
    diff = (correct_b.astype(np.float64) - correct_a.astype(np.float64)) * evaluated
    counts = evaluated.sum(axis=1).astype(np.float64)
    if np.any(counts == 0):
        raise ValueError("a session evaluated no test image")
    per_session = diff / counts[:, None]
    if statistic == "last":
        return per_session[-1]
    if statistic == "avg":
        return per_session.mean(axis=0)
    raise ValueError(f"statistic must be 'last' or 'avg', got {statistic!r}")


@dataclass(frozen=True)
class Interval:
    """An estimate with a confidence interval from ``resamples`` bootstrap resamples."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)


def stratified_bootstrap(contributions: np.ndarray, strata: np.ndarray, confidence: float = 0.95,
                         resamples: int = 2000, seed: int = 0, block: int = 200) -> Interval:
    """Percentile interval of ``sum(contributions)`` when the images are resampled with
    replacement within their strata (module docstring).

    ``contributions`` and ``strata`` (the class of each image) have one entry per test image; for
    several runs on one test set, pass the mean of their contributions. A stratum whose
    contributions are all equal adds the same to every resample and is not resampled. ``block``
    resamples are drawn at a time (memory: ``block x N``).
    """
    values, strata = np.asarray(contributions, dtype=np.float64), np.asarray(strata)
    if values.shape != strata.shape or values.ndim != 1:
        raise ValueError(f"contributions and strata must be 1-D of one length, got {values.shape} and {strata.shape}")
    rng = np.random.default_rng(seed)
    order = np.argsort(strata, kind="stable")
    values, strata = values[order], strata[order]
    _, starts, sizes = np.unique(strata, return_index=True, return_counts=True)
    varies = np.array([np.ptp(values[a:a + n]) > 0 for a, n in zip(starts, sizes)], dtype=bool)
    totals = np.full(resamples, float(sum(values[a:a + n].sum() for a, n, v in zip(starts, sizes, varies) if not v)))
    if varies.any():
        start_of = np.repeat(starts[varies], sizes[varies])  # per resampled image: its stratum's first position
        size_of = np.repeat(sizes[varies], sizes[varies])
        for first in range(0, resamples, block):
            u = rng.random((min(block, resamples - first), len(start_of)))
            picks = start_of + (u * size_of).astype(np.int64)  # a uniform draw within the image's stratum
            totals[first:first + len(u)] += values[picks].sum(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(totals, [tail, 100 - tail])
    return Interval(float(values.sum()), float(low), float(high), confidence, resamples)
