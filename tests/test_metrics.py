"""Known-answer tests for fscil_bench.metrics.

Expected values are worked out by hand (in comments) or from closed forms of the constructed
predictions, never by re-running the module's own code path.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fscil_bench import metrics as M
from fscil_bench.metrics.descriptors import METRICS, summarize
from fscil_bench.metrics.fscil import (
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    base_novel_accuracy,
    forgetting_initial,
    forgetting_initial_per_session,
    forgetting_max,
    forgetting_max_per_session,
    harmonic_mean,
    last_accuracy,
    performance_drop,
    session_accuracies,
    top1_accuracy,
)

nan = float("nan")
approx = pytest.approx


def nan_equal(a, b):
    return np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=0, atol=1e-12)


def make_session(counts, num_seen, rng=None):
    """Labels/preds for one session from ``{class_range: (n_samples, n_correct)}``.

    ``counts`` maps ``(start, stop)`` to ``(n, k)``: n test samples spread over the classes of
    that range, the first k of them predicted right, the rest predicted as another seen class.
    The samples are shuffled so that nothing depends on their order.
    """
    labels, preds = [], []
    for (start, stop), (n, k) in counts.items():
        y = start + np.arange(n) % (stop - start)
        p = y.copy()
        p[k:] = (y[k:] + 1) % num_seen  # a wrong, but seen, class
        labels.append(y)
        preds.append(p)
    y, p = np.concatenate(labels), np.concatenate(preds)
    if rng is not None:
        perm = rng.permutation(len(y))
        y, p = y[perm], p[perm]
    return y, p


# --------------------------------------------------------------------------------------------
# 3-session toy: groups (0,2), (2,3), (3,4)
# --------------------------------------------------------------------------------------------

TOY_GROUPS = [(0, 2), (2, 3), (3, 4)]
TOY_LABELS = [
    np.array([0, 0, 1, 1]),
    np.array([0, 0, 1, 1, 2, 2]),
    np.array([0, 0, 1, 1, 2, 2, 3, 3]),
]
TOY_PREDS = [
    # s0: group0 right on 0,0,1 wrong on last 1        -> A[0][0] = 3/4
    np.array([0, 0, 1, 0]),
    # s1: group0 4/4 (it *rises*), group1 1/2           -> A[1][0] = 1, A[1][1] = 1/2
    np.array([0, 0, 1, 1, 2, 0]),
    # s2: group0 2/4, group1 1/2, group2 1/2            -> A[2][0] = 1/2, A[2][1] = 1/2, A[2][2] = 1/2
    np.array([0, 1, 1, 0, 2, 0, 3, 1]),
]
# A = [[3/4, -,   -  ],
#      [1,   1/2, -  ],
#      [1/2, 1/2, 1/2]]
# A_0 = 3/4, A_1 = 5/6 (5 of 6 right; the unweighted mean of (1, 1/2) would be 3/4), A_2 = 4/8 = 1/2
# avg = (3/4 + 5/6 + 1/2) / 3 = (9 + 10 + 6) / 36 = 25/36;  PD = 3/4 - 1/2 = 1/4;  last = 1/2
# base/novel/hm: s0 3/4, nan, nan; s1 1, 1/2, 2*1*(1/2)/(3/2) = 2/3; s2 2/4, 2/4 (classes 2,3 pooled), 1/2
# forgetting at T=2:
#   max:     g0 max(3/4, 1) - 1/2 = 1/2;  g1 max(1/2) - 1/2 = 0   -> 1/4
#   initial: g0 3/4 - 1/2 = 1/4;          g1 1/2 - 1/2 = 0         -> 1/8;  BWT = -1/8
# forgetting at T=1 (g0 only): max 3/4 - 1 = -1/4; initial 3/4 - 1 = -1/4
TOY_A = np.array([[0.75, nan, nan], [1.0, 0.5, nan], [0.5, 0.5, 0.5]])


def test_toy_accuracy_matrix():
    A = accuracy_matrix(TOY_LABELS, TOY_PREDS, TOY_GROUPS)
    assert A.shape == (3, 3)
    nan_equal(A, TOY_A)


def test_toy_session_metrics():
    accs = session_accuracies(TOY_LABELS, TOY_PREDS)
    assert accs == approx([3 / 4, 5 / 6, 1 / 2])
    assert average_accuracy(accs) == approx(25 / 36)
    assert performance_drop(accs) == approx(1 / 4)
    assert last_accuracy(accs) == approx(1 / 2)


def test_toy_base_novel():
    b, n, h = base_novel_accuracy(TOY_LABELS[0], TOY_PREDS[0], 2)
    assert b == approx(0.75) and math.isnan(n) and math.isnan(h)
    assert base_novel_accuracy(TOY_LABELS[1], TOY_PREDS[1], 2) == approx((1.0, 0.5, 2 / 3))
    assert base_novel_accuracy(TOY_LABELS[2], TOY_PREDS[2], 2) == approx((0.5, 0.5, 0.5))


def test_toy_forgetting():
    assert forgetting_max(TOY_A) == approx(1 / 4)
    assert forgetting_initial(TOY_A) == approx(1 / 8)
    assert backward_transfer(TOY_A) == approx(-1 / 8)
    assert forgetting_max(TOY_A, T=1) == approx(-1 / 4)
    assert forgetting_initial(TOY_A, T=1) == approx(-1 / 4)
    assert math.isnan(forgetting_max(TOY_A, T=0))
    nan_equal(forgetting_max_per_session(TOY_A), [nan, -1 / 4, 1 / 4])
    nan_equal(forgetting_initial_per_session(TOY_A), [nan, -1 / 4, 1 / 8])


def test_toy_summarize():
    s = summarize(TOY_LABELS, TOY_PREDS, TOY_GROUPS)
    assert set(s) == {m.key for m in METRICS if m.from_predictions}
    assert s["session_acc"] == approx([3 / 4, 5 / 6, 1 / 2])
    assert s["avg"] == approx(25 / 36)
    assert s["last"] == approx(0.5)
    assert s["pd"] == approx(0.25)
    assert s["base_acc"] == approx([0.75, 1.0, 0.5])
    assert s["novel_acc"][0] is None and s["novel_acc"][1:] == approx([0.5, 0.5])
    assert s["hm"][0] is None and s["hm"][1:] == approx([2 / 3, 0.5])
    assert s["acc_matrix"][0][1] is None and s["acc_matrix"][0][2] is None and s["acc_matrix"][1][2] is None
    assert s["acc_matrix"][2] == approx([0.5, 0.5, 0.5])
    assert s["acc_matrix"][1][:2] == approx([1.0, 0.5])
    assert s["forgetting_max"] == approx(0.25)
    assert s["forgetting_initial"] == approx(0.125)
    assert s["bwt"] == approx(-0.125)
    assert s["forgetting_max_per_session"][0] is None
    assert s["forgetting_max_per_session"][1:] == approx([-0.25, 0.25])
    assert s["forgetting_initial_per_session"][1:] == approx([-0.25, 0.125])
    assert s["num_test_samples"] == [4, 6, 8]
    # JSON-serialisable with plain Python types, no NaN.
    json.dumps(s, allow_nan=False)
    for key in ("avg", "last", "pd", "forgetting_max", "forgetting_initial", "bwt"):
        assert type(s[key]) is float
    assert all(type(v) is float for v in s["session_acc"])
    assert all(type(v) is int for v in s["num_test_samples"])


# --------------------------------------------------------------------------------------------
# max-based vs initial-based forgetting, on a matrix given directly
# --------------------------------------------------------------------------------------------


def test_max_and_initial_forgetting_differ_when_accuracy_rises_then_falls():
    # group 0: 0.5 -> 0.9 -> 0.6 (rises, then falls); group 1: 0.7 -> 0.4
    A = np.array([[0.5, nan, nan], [0.9, 0.7, nan], [0.6, 0.4, 0.8]])
    # max:     g0 0.9 - 0.6 = 0.3;  g1 0.7 - 0.4 = 0.3  -> 0.3
    # initial: g0 0.5 - 0.6 = -0.1; g1 0.7 - 0.4 = 0.3  -> 0.1;  BWT = -0.1
    assert forgetting_max(A) == approx(0.3)
    assert forgetting_initial(A) == approx(0.1)
    assert backward_transfer(A) == approx(-0.1)
    # monotone decrease: both conventions agree
    B = np.array([[0.9, nan], [0.6, 0.5]])
    assert forgetting_max(B) == approx(0.3) and forgetting_initial(B) == approx(0.3)


def test_no_forgetting_bwt_is_positive_zero():
    A = np.array([[1.0, nan], [1.0, 1.0]])
    assert backward_transfer(A) == 0.0 and math.copysign(1.0, backward_transfer(A)) == 1.0


# --------------------------------------------------------------------------------------------
# uneven schedule: 100 base classes + 10 sessions x 10-way
# --------------------------------------------------------------------------------------------


def _hundred_plus_ten_by_ten():
    groups = [(0, 100)] + [(100 + 10 * i, 110 + 10 * i) for i in range(10)]
    rng = np.random.default_rng(0)
    labels, preds = [], []
    for t in range(11):
        num_seen = groups[t][1]
        # base group: 500 samples (5 per class), right on 500 - 25 t -> A[t][0] = 1 - 0.05 t
        counts = {groups[0]: (500, 500 - 25 * t)}
        # novel group g: 50 samples (5 per class), right on 40 - 2 (t - g) -> A[t][g] = 0.8 - 0.04 (t - g)
        for g in range(1, t + 1):
            counts[groups[g]] = (50, 40 - 2 * (t - g))
        y, p = make_session(counts, num_seen, rng)
        labels.append(y)
        preds.append(p)
    return groups, labels, preds


def test_uneven_100_plus_10x10():
    groups, labels, preds = _hundred_plus_ten_by_ten()
    A = accuracy_matrix(labels, preds, groups)
    assert A.shape == (11, 11)
    for t in range(11):
        assert A[t, 0] == approx(1 - 0.05 * t)
        for g in range(1, t + 1):
            assert A[t, g] == approx(0.8 - 0.04 * (t - g))
        assert np.isnan(A[t, t + 1 :]).all()

    # A_t = correct / total = (500 - 25t + sum_{g=1..t}(40 - 2(t-g))) / (500 + 50t)
    #     = (500 - 25t + 40t - t(t-1)) / (500 + 50t) = (500 + 16t - t^2) / (500 + 50t)
    expected = [(500 + 16 * t - t * t) / (500 + 50 * t) for t in range(11)]
    accs = session_accuracies(labels, preds)
    assert accs == approx(expected)
    assert accs[0] == approx(1.0) and accs[10] == approx(0.56)  # 560 / 1000
    assert performance_drop(accs) == approx(0.44)
    assert average_accuracy(accs) == approx(sum(expected) / 11)

    # At T = 10 every group decreases monotonically, so both conventions agree:
    #   g0: 1.0 - 0.5 = 0.5;  g = 1..9: 0.8 - (0.8 - 0.04 (10 - g)) = 0.04 (10 - g), summing to 0.04 * 45 = 1.8
    #   F = (0.5 + 1.8) / 10 = 0.23
    assert forgetting_max(A) == approx(0.23)
    assert forgetting_initial(A) == approx(0.23)
    assert backward_transfer(A) == approx(-0.23)

    # base 250/500 = 0.5; novel pooled 310/500 = 0.62 (sum_g 40 - 2(10-g) = 400 - 90); HM = 0.62 / 1.12
    b, n, h = base_novel_accuracy(labels[10], preds[10], 100)
    assert (b, n, h) == approx((0.5, 0.62, 2 * 0.5 * 0.62 / 1.12))

    s = summarize(labels, preds, groups)
    assert s["num_test_samples"] == [500 + 50 * t for t in range(11)]
    assert s["forgetting_max"] == approx(0.23)
    # pooled novel accuracy is not the mean of per-session novel accuracies when they differ
    assert s["novel_acc"][10] == approx(0.62)
    json.dumps(s, allow_nan=False)


# --------------------------------------------------------------------------------------------
# CIFAR-100-like: 60 base classes + 8 sessions x 5-way, 100 test samples per class
# --------------------------------------------------------------------------------------------


def test_cifar_like_60_plus_8x5():
    groups = [(0, 60)] + [(60 + 5 * i, 65 + 5 * i) for i in range(8)]
    rng = np.random.default_rng(1)
    labels, preds = [], []
    for t in range(9):
        # base: 6000 samples, 5400 right (0.9); each novel group: 500 samples, 250 right (0.5)
        counts = {groups[0]: (6000, 5400)}
        for g in range(1, t + 1):
            counts[groups[g]] = (500, 250)
        y, p = make_session(counts, groups[t][1], rng)
        labels.append(y)
        preds.append(p)

    s = summarize(labels, preds, groups)
    assert len(s["session_acc"]) == 9 and len(s["acc_matrix"]) == 9
    # A_t = (5400 + 250 t) / (6000 + 500 t); A_8 = 7400 / 10000
    expected = [(5400 + 250 * t) / (6000 + 500 * t) for t in range(9)]
    assert s["session_acc"] == approx(expected)
    assert s["last"] == approx(0.74)
    assert s["pd"] == approx(0.9 - 0.74)
    assert s["avg"] == approx(sum(expected) / 9)
    assert s["base_acc"] == approx([0.9] * 9)
    assert s["novel_acc"][0] is None and s["novel_acc"][1:] == approx([0.5] * 8)
    assert s["hm"][0] is None and s["hm"][1:] == approx([2 * 0.9 * 0.5 / 1.4] * 8)  # 0.642857...
    # constant accuracies: no forgetting in either convention
    assert s["forgetting_max"] == approx(0.0) and s["forgetting_initial"] == approx(0.0)
    assert s["bwt"] == approx(0.0)
    assert s["num_test_samples"] == [6000 + 500 * t for t in range(9)]


# --------------------------------------------------------------------------------------------
# sample weighting
# --------------------------------------------------------------------------------------------


def test_session_accuracy_is_sample_weighted():
    groups = [(0, 2), (2, 3)]
    # session 1: group0 has 8 samples all right, group1 has 2 samples none right
    labels = [np.array([0, 1] * 4), np.array([0, 1] * 4 + [2, 2])]
    preds = [labels[0].copy(), np.array([0, 1] * 4 + [0, 0])]
    A = accuracy_matrix(labels, preds, groups)
    assert A[1, 0] == 1.0 and A[1, 1] == 0.0
    acc = session_accuracies(labels, preds)[1]
    assert acc == approx(0.8)  # 8 / 10
    assert acc != approx(np.nanmean(A[1]))  # the unweighted group mean would be 0.5


# --------------------------------------------------------------------------------------------
# NaN cases
# --------------------------------------------------------------------------------------------


def test_single_session_T0():
    groups = [(0, 3)]
    labels = [np.array([0, 1, 2, 2])]
    preds = [np.array([0, 1, 2, 0])]
    s = summarize(labels, preds, groups)
    assert s["session_acc"] == approx([0.75])
    assert s["avg"] == approx(0.75) and s["last"] == approx(0.75)
    assert s["pd"] == 0.0  # A_0 - A_0
    assert s["novel_acc"] == [None] and s["hm"] == [None]
    assert s["forgetting_max"] is None and s["forgetting_initial"] is None and s["bwt"] is None
    assert s["forgetting_max_per_session"] == [None]
    A = np.array([[0.75]])
    assert math.isnan(forgetting_max(A)) and math.isnan(forgetting_initial(A)) and math.isnan(backward_transfer(A))


def test_empty_group_gives_nan_not_zero():
    groups = [(0, 2), (2, 4), (4, 5)]
    # group 1 (classes 2, 3) has no test samples at all
    labels = [np.array([0, 1]), np.array([0, 1]), np.array([0, 1, 4, 4])]
    preds = [np.array([0, 1]), np.array([0, 0]), np.array([1, 1, 4, 0])]
    A = accuracy_matrix(labels, preds, groups)
    # A = [[1, -, -], [1/2, nan, -], [1/2, nan, 1/2]]
    nan_equal(A, [[1.0, nan, nan], [0.5, nan, nan], [0.5, nan, 0.5]])
    # session 1 has no novel samples: novel and HM undefined
    b, n, h = base_novel_accuracy(labels[1], preds[1], 2)
    assert b == 0.5 and math.isnan(n) and math.isnan(h)
    # forgetting at T=2 averages over the groups with a defined term (g0 only): 1 - 1/2
    assert forgetting_max(A) == approx(0.5)
    assert forgetting_initial(A) == approx(0.5)
    s = summarize(labels, preds, groups)
    assert s["acc_matrix"][1] == [0.5, None, None]
    assert s["novel_acc"] == [None, None, 0.5]
    assert s["session_acc"] == approx([1.0, 0.5, 0.5])  # 2/2, 1/2, 2/4


def test_all_groups_undefined_forgetting_is_nan():
    A = np.array([[nan, nan], [nan, 0.5]])
    assert math.isnan(forgetting_max(A)) and math.isnan(forgetting_initial(A))


def test_empty_and_scalar_helpers():
    assert math.isnan(top1_accuracy([], []))
    assert top1_accuracy([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    assert top1_accuracy(np.array([1.0, 2.0]), np.array([1, 3])) == 0.5  # integral floats accepted
    assert math.isnan(average_accuracy([]))
    assert math.isnan(performance_drop([]))
    assert math.isnan(last_accuracy([]))
    assert math.isnan(average_accuracy([0.5, nan]))


def test_harmonic_mean():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(0.6, 0.3) == approx(0.4)  # 2 * 0.18 / 0.9
    assert harmonic_mean(0.5, 0.5) == approx(0.5)
    assert math.isnan(harmonic_mean(nan, 0.5))
    assert math.isnan(harmonic_mean(0.5, nan))
    assert math.isnan(harmonic_mean(nan, nan))


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="differ in length: 3 labels vs 2 preds"):
        top1_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="of session 1 differ in length"):
        accuracy_matrix([np.array([0, 1]), np.array([0, 2])], [np.array([0, 1]), np.array([0])], [(0, 2), (2, 3)])
    with pytest.raises(ValueError, match="labels for 2 sessions but preds for 1"):
        session_accuracies([np.array([0]), np.array([0])], [np.array([0])])


def test_label_out_of_range_raises():
    with pytest.raises(ValueError, match=r"session 0: test label 2 is >= num_seen\(0\) = 2"):
        accuracy_matrix([np.array([0, 2]), np.array([0, 2])], [np.array([0, 1]), np.array([0, 2])], [(0, 2), (2, 3)])
    with pytest.raises(ValueError, match="negative label"):
        summarize([np.array([-1, 0])], [np.array([0, 0])], [(0, 2)])


def test_session_count_mismatch_raises():
    with pytest.raises(ValueError, match="predictions for 2 sessions but groups describes 3 sessions"):
        summarize(TOY_LABELS[:2], TOY_PREDS[:2], TOY_GROUPS)


def test_bad_groups_raise():
    with pytest.raises(ValueError, match="contiguous"):
        accuracy_matrix([np.array([0])], [np.array([0])], [(1, 3)])
    with pytest.raises(ValueError, match="contiguous"):
        accuracy_matrix(TOY_LABELS[:2], TOY_PREDS[:2], [(0, 2), (3, 4)])
    with pytest.raises(ValueError, match="no classes"):
        accuracy_matrix(TOY_LABELS[:2], TOY_PREDS[:2], [(0, 2), (2, 2)])
    with pytest.raises(ValueError, match="empty"):
        accuracy_matrix([], [], [])


def test_bad_matrix_or_T_raise():
    with pytest.raises(ValueError, match="square"):
        forgetting_max(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="out of range"):
        forgetting_initial(TOY_A, T=3)
    with pytest.raises(ValueError, match="out of range"):
        backward_transfer(TOY_A, T=-1)


def test_non_integer_labels_raise():
    with pytest.raises(ValueError, match="integer class ids"):
        top1_accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        top1_accuracy([[0, 1]], [[0, 1]])


# --------------------------------------------------------------------------------------------
# module contract
# --------------------------------------------------------------------------------------------


def test_metric_definitions_cover_summary_keys():
    s = summarize(TOY_LABELS, TOY_PREDS, TOY_GROUPS)
    assert [m.key for m in METRICS if m.from_predictions] == list(s)
    for m in METRICS:
        assert isinstance(m.definition, str) and m.definition and "\n" not in m.definition, m.key


def test_the_metrics_package_needs_numpy_alone():
    for path in sorted(Path(M.__file__).parent.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        outside = {m for m in imported if not m.startswith("fscil_bench.metrics")}
        assert {m.split(".")[0] for m in outside} <= {"__future__", "math", "collections", "typing", "numpy",
                                                     "dataclasses", "functools"}, path.name
