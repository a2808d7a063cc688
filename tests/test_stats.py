"""The statistics of the leaderboard's spreads and paired comparisons, on synthetic cases with known answers."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fscil_bench.reporting.stats import (
    factor_spread,
    paired_runs,
    per_image_difference,
    stratified_bootstrap,
    total_spread,
)


def grid(values) -> list:
    """``values[(seed, split, order)]`` as points."""
    return sorted(values.items())


def test_spreads_separate_additive_sources_exactly():
    # value = seed effect + split effect + order effect: with the other two held fixed, each source
    # varies by its own effect alone, so each pooled sd is the sd of that effect.
    seed_fx, split_fx, order_fx = [0.0, 0.02, 0.04], [0.0, 0.1], [0.0, 0.0, 0.3]
    points = grid({(s, d, o): 0.5 + seed_fx[s] + split_fx[d] + order_fx[o]
                   for s in range(3) for d in range(2) for o in range(3)})
    seed, split, order = (factor_spread(points, f) for f in ("seed", "split", "order"))
    assert seed.sd == pytest.approx(np.std(seed_fx, ddof=1)) and (seed.levels, seed.groups, seed.runs) == (3, 6, 18)
    assert split.sd == pytest.approx(np.std(split_fx, ddof=1)) and (split.levels, split.groups) == (2, 9)
    assert order.sd == pytest.approx(np.std(order_fx, ddof=1)) and (order.levels, order.groups) == (3, 6)
    mean, sd, n = total_spread([v for _, v in points])
    values = [v for _, v in points]
    assert n == 18 and mean == pytest.approx(np.mean(values)) and sd == pytest.approx(np.std(values, ddof=1))


def test_spreads_pool_groups_by_degrees_of_freedom_and_work_one_source_at_a_time():
    # Seeds 0-2 on the standard split; splits 1-3 and orders 1-2 on seed 0 alone (a "star" design).
    points = grid({(0, 0, 0): 0.60, (1, 0, 0): 0.62, (2, 0, 0): 0.64,
                   (0, 1, 0): 0.50, (0, 2, 0): 0.70, (0, 3, 0): 0.60,
                   (0, 0, 1): 0.58, (0, 0, 2): 0.60})
    assert factor_spread(points, "seed").sd == pytest.approx(0.02)  # sd of 0.60, 0.62, 0.64
    split = factor_spread(points, "split")
    assert split.sd == pytest.approx(np.std([0.60, 0.50, 0.70, 0.60], ddof=1)) and split.levels == 4
    order = factor_spread(points, "order")
    assert order.sd == pytest.approx(np.std([0.60, 0.58, 0.60], ddof=1)) and order.levels == 3
    # Two groups of unequal size: sqrt((1 * s1^2 + 2 * s2^2) / 3).
    two = grid({(0, 0, 0): 1.0, (1, 0, 0): 3.0, (0, 1, 0): 0.0, (1, 1, 0): 2.0, (2, 1, 0): 7.0})
    s1, s2 = np.var([1.0, 3.0], ddof=1), np.var([0.0, 2.0, 7.0], ddof=1)
    assert factor_spread(two, "seed").sd == pytest.approx(math.sqrt((s1 + 2 * s2) / 3))
    lone = factor_spread(grid({(0, 0, 0): 0.5, (1, 1, 0): 0.6}), "seed")  # no group of two
    assert math.isnan(lone.sd) and lone.groups == 0
    assert math.isnan(total_spread([0.5])[1]) and total_spread([])[2] == 0


def test_paired_t_interval_and_p_values_by_hand():
    a = np.array([0.60, 0.62, 0.58, 0.61, 0.59])
    d = np.array([0.010, 0.030, 0.020, 0.000, 0.015])
    result = paired_runs(a, a + d)
    half = scipy_stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert result.n == 5 and result.mean == pytest.approx(d.mean())
    assert (result.low, result.high) == pytest.approx((d.mean() - half, d.mean() + half))
    t = d.mean() / (d.std(ddof=1) / math.sqrt(5))
    assert result.p_t == pytest.approx(2 * scipy_stats.t.sf(t, 4))
    assert result.excludes_zero
    # Wilcoxon: 10 positive differences of distinct sizes -> the smallest exact two-sided p, 2 / 2^10.
    ten = paired_runs(np.zeros(10), np.arange(1, 11) / 100)
    assert ten.p_wilcoxon == pytest.approx(2 / 2**10)


def test_paired_edge_cases():
    same = paired_runs([0.5, 0.6, 0.7], [0.55, 0.65, 0.75])  # identical differences (up to float error)
    assert (same.low, same.high) == pytest.approx((0.05, 0.05)) and same.p_t == 0.0 and same.excludes_zero
    zero = paired_runs([0.5, 0.6], [0.5, 0.6])
    assert zero.mean == 0 and zero.p_t == 1.0 and math.isnan(zero.p_wilcoxon) and not zero.excludes_zero
    one = paired_runs([0.5], [0.7])
    assert one.mean == pytest.approx(0.2) and math.isnan(one.low) and not one.excludes_zero
    noisy = paired_runs([0.5, 0.6, 0.7], [0.52, 0.59, 0.71])
    assert noisy.low < 0 < noisy.high and not noisy.excludes_zero
    with pytest.raises(ValueError, match="equal length"):
        paired_runs([0.1, 0.2], [0.1])


def test_per_image_differences_sum_to_the_accuracy_differences():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 5)
    groups = [(0, 4), (4, 5), (5, 6)]
    evaluated = np.stack([labels < stop for _, stop in groups])
    a, b = (rng.random(evaluated.shape) < p for p in (0.5, 0.7))
    a, b = a & evaluated, b & evaluated
    acc = {name: [c[t][evaluated[t]].mean() for t in range(3)] for name, c in (("a", a), ("b", b))}
    last = per_image_difference(a, b, evaluated, "last")
    avg = per_image_difference(a, b, evaluated, "avg")
    assert last.sum() == pytest.approx(acc["b"][-1] - acc["a"][-1])
    assert avg.sum() == pytest.approx(np.mean(acc["b"]) - np.mean(acc["a"]))
    with pytest.raises(ValueError, match="statistic must be"):
        per_image_difference(a, b, evaluated, "median")


def test_image_bootstrap_known_answers():
    # Constant contributions within each class: every resample gives the same sum, no spread.
    strata = np.repeat([0, 1], 50)
    flat = stratified_bootstrap(np.where(strata == 0, 0.01, -0.002), strata, resamples=500)
    assert flat.estimate == pytest.approx(0.4) and flat.low == pytest.approx(0.4) and flat.high == pytest.approx(0.4)
    # One class, n images of which a fraction p count 1/n: the resampled sum is Binomial(n, p) / n.
    n, p = 400, 0.3
    contributions = np.r_[np.full(int(n * p), 1 / n), np.zeros(n - int(n * p))]
    result = stratified_bootstrap(contributions, np.zeros(n), resamples=20000, seed=1)
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert result.estimate == pytest.approx(p)
    assert (result.low, result.high) == pytest.approx((p - half, p + half), abs=0.006)
    # The same as scipy's percentile bootstrap of the mean on the same sample (one stratum).
    scipy_ci = scipy_stats.bootstrap((contributions * n,), np.mean, method="percentile", n_resamples=20000,
                                     rng=np.random.default_rng(2)).confidence_interval
    assert (result.low, result.high) == pytest.approx((scipy_ci.low, scipy_ci.high), abs=0.006)
    # Two strata: only the varying one is resampled, the other adds its constant sum; the interval
    # is the single stratum's, shifted.
    both = stratified_bootstrap(np.r_[contributions, np.full(50, 0.002)], np.r_[np.zeros(n), np.ones(50)],
                                resamples=20000, seed=1)
    assert (both.low, both.high) == pytest.approx((result.low + 0.1, result.high + 0.1))
    assert stratified_bootstrap(contributions, np.zeros(n), seed=3) == stratified_bootstrap(contributions, np.zeros(n),
                                                                                            seed=3)  # seeded
    with pytest.raises(ValueError, match="one length"):
        stratified_bootstrap(contributions, np.zeros(3))
