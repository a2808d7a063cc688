"""gAcc and its AUC (Tang et al., ECCV 2024) and the class-wise average harmonic mean (OrCo), by hand."""

import math

import numpy as np
import pytest

from fscil_bench.metrics.descriptors import RunOutputs, compute_metrics, metric
from fscil_bench.metrics.fscil import (
    average_harmonic_mean,
    base_novel_accuracy,
    class_wise_base_novel,
    gacc_alphas,
    gacc_auc,
    generalised_accuracy,
)


def worked_matrix() -> np.ndarray:
    """The per-task accuracies [[80], [70, 65], [65, 60, 55]] (percent) as a matrix of fractions."""
    A = np.full((3, 3), np.nan)
    A[0, 0], A[1, :2], A[2] = 0.80, [0.70, 0.65], [0.65, 0.60, 0.55]
    return A


def test_gacc_of_the_worked_example_matches_the_official_values_from_alpha_one_on():
    curve = generalised_accuracy(worked_matrix(), range(13))
    # Official (Revisting_FSCIL models/metric.py, values of the notes): 69.17, 69.86, ..., 71.18 for alpha = 1..12.
    official = [69.17, 69.86, 70.25, 70.50, 70.67, 70.80, 70.90, 70.98, 71.05, 71.10, 71.14, 71.18]
    assert [round(100 * g, 2) for g in curve[1:]] == official
    # alpha = 1 by hand: (80 + (70 + 65) / 2 + (65 + 60 + 55) / 3) / 3.
    assert curve[1] == pytest.approx((0.80 + 0.675 + 0.60) / 3)
    # alpha = 0: the novel tasks only, session 0 keeps A[0][0] = 0.80: (0.80 + 0.65 + 0.575) / 3 = 0.675.
    # The official code counts session 0 as 0 here, which gives (0 + 0.65 + 0.575) / 3 = 0.4083.
    assert curve[0] == pytest.approx(0.675)


def test_gacc_auc_is_the_normalised_trapezoid_and_differs_from_the_official_by_the_alpha_zero_quirk():
    curve = generalised_accuracy(worked_matrix(), range(13))
    by_hand = (curve[0] / 2 + sum(curve[1:12]) + curve[12] / 2) / 12
    assert gacc_auc(curve, range(13)) == pytest.approx(by_hand)
    assert gacc_auc(curve, range(13)) == pytest.approx(0.704807, abs=1e-6)
    official_curve = [(0.65 + 0.575) / 3] + curve[1:]
    assert gacc_auc(official_curve, range(13)) == pytest.approx(0.69370, abs=1e-5)  # the official AUC
    assert math.isnan(gacc_auc([0.5], [0]))


def test_gacc_limits_alpha_grid_and_nan():
    A = worked_matrix()
    assert generalised_accuracy(A, [1e9])[0] == pytest.approx((0.80 + 0.70 + 0.65) / 3, abs=1e-6)  # -> base accuracy
    assert gacc_alphas([(0, 60), (60, 65), (65, 70)]) == list(range(13))
    assert gacc_alphas([(0, 100), (100, 110)]) == list(range(11))
    assert gacc_alphas([(0, 3), (3, 8)]) == [0]  # B < W
    assert gacc_alphas([(0, 5)]) == [0]
    A[2, 1] = np.nan  # a task without test samples
    assert math.isnan(generalised_accuracy(A, [1])[0])
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        generalised_accuracy(worked_matrix(), [-1])


GROUPS = [(0, 2), (2, 3), (3, 4)]
LABELS = [np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 1, 2, 2]), np.array([0, 0, 0, 0, 1, 2, 2, 3, 3, 3])]
PREDS = [np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 0, 2, 0]), np.array([0, 0, 1, 1, 1, 2, 2, 0, 0, 3])]


def test_class_wise_accuracies_weigh_every_class_alike():
    # Session 2: classes 0 (2/4 right) and 1 (1/1): base 0.75; classes 2 (2/2) and 3 (1/3): novel 2/3.
    base, novel, hm = class_wise_base_novel(LABELS[2], PREDS[2], 2)
    assert (base, novel) == pytest.approx((0.75, 2 / 3))
    assert hm == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))
    # The sample-weighted ones: 3/5 and 3/5.
    assert base_novel_accuracy(LABELS[2], PREDS[2], 2)[:2] == pytest.approx((0.6, 0.6))
    assert math.isnan(class_wise_base_novel(LABELS[0], PREDS[0], 2)[1])  # no novel class in session 0


def test_average_harmonic_mean_leaves_session_zero_out():
    run = RunOutputs(LABELS, PREDS, GROUPS)
    values = compute_metrics(run, source="predictions")
    session1, session2 = 0.5, 2 * 0.75 * (2 / 3) / (0.75 + 2 / 3)  # session 1: base (1 + 0)/2, novel 1/2
    assert values["hm_class_wise"][0] is None
    assert values["hm_class_wise"][1:] == pytest.approx([session1, session2])
    assert values["hm_avg"] == pytest.approx((session1 + session2) / 2)
    assert average_harmonic_mean([float("nan"), 0.4, 0.6]) == pytest.approx(0.5)
    assert math.isnan(average_harmonic_mean([0.9]))


def test_gacc_descriptors_from_predictions():
    # 4 base classes, 2-way sessions: alpha = 0, 1, 2.
    groups = [(0, 4), (4, 6), (6, 8)]
    labels = [np.arange(4), np.arange(6), np.arange(8)]
    preds = [np.array([0, 1, 2, 0]), np.array([0, 1, 0, 0, 4, 0]), np.array([0, 0, 0, 0, 4, 5, 6, 0])]
    run = RunOutputs(labels, preds, groups)
    # A = [[3/4], [2/4, 1/2], [1/4, 1, 1/2]]
    g = {a: ((3 / 4) + (a * 2 / 4 + 1 / 2) / (a + 1) + (a / 4 + 1 + 1 / 2) / (a + 2)) / 3 for a in (1, 2)}
    g[0] = (3 / 4 + 1 / 2 + (1 + 1 / 2) / 2) / 3
    values = compute_metrics(run, source="predictions")
    assert values["gacc"] == pytest.approx([g[0], g[1], g[2]])
    assert values["gacc_1"] == pytest.approx(g[1])
    assert values["gacc_auc"] == pytest.approx((g[0] / 2 + g[1] + g[2] / 2) / 2)
    assert metric("gacc").shape == "alpha" and metric("gacc_auc").column and metric("hm_avg").column
