"""Neural-collapse diagnostics: the metric functions on constructed features with known answers,
the runner's ``diagnostics`` field, and ``embed``/``classify`` of every registered method."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_synthetic_benchmark

from fscil_bench import Context, MethodBase, Session
from fscil_bench.data.arrays import iterate_images
from fscil_bench.metrics.collapse import (
    class_means,
    classifier_alignment,
    collapse_diagnostics,
    equiangularity,
    equinorm,
    group_alignment,
    self_duality,
    within_class_variability,
)
from fscil_bench.models.etf import simplex_etf
from fscil_bench.results.store import RunKey
from fscil_bench.run.grid import build_record
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import RunOptions, run_method

# --- constructed features -----------------------------------------------------------------------


def etf_rows(num_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    """A simplex ETF, one unit-norm vertex per row."""
    return simplex_etf(num_classes, dim, seed=seed).T.numpy()


def test_features_at_simplex_etf_vertices_are_fully_collapsed():
    C, d, n = 10, 32, 7
    etf = etf_rows(C, d)
    labels = np.repeat(np.arange(C), n)
    features = etf[labels]
    groups = [(0, 6), (6, 8), (8, 10)]
    diag = collapse_diagnostics(features, labels, groups, classifier=etf)
    assert diag["nc1"] == pytest.approx(0.0, abs=1e-12)  # zero up to float64 rounding
    assert diag["equinorm"] == pytest.approx(0.0, abs=1e-6)
    assert diag["equiangularity"] == pytest.approx(0.0, abs=1e-6)
    assert diag["self_duality"] == pytest.approx(0.0, abs=1e-6)
    assert diag["alignment"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


def test_collapse_survives_scaling_and_a_rotation_but_alignment_sees_a_shifted_classifier():
    C, d = 6, 16
    etf = etf_rows(C, d, seed=3)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))
    labels = np.repeat(np.arange(C), 4)
    features = 5.0 * etf[labels] @ rotation
    diag = collapse_diagnostics(features, labels, [(0, C)], classifier=etf @ rotation)
    assert diag["nc1"] == pytest.approx(0.0, abs=1e-12)
    assert diag["equiangularity"] == pytest.approx(0.0, abs=1e-6)
    assert diag["self_duality"] == pytest.approx(0.0, abs=1e-6)
    assert diag["alignment"] == pytest.approx([1.0], abs=1e-6)
    # A classifier that is the means plus a common offset is no longer self-dual or aligned.
    shifted = etf @ rotation + 2.0 * rotation[0]
    worse = collapse_diagnostics(features, labels, [(0, C)], classifier=shifted)
    assert worse["self_duality"] > 0.5
    assert worse["alignment"][0] < 0.6


def test_nc1_of_a_small_example_by_hand():
    # d = 1. Class 0: {0, 2} (mean 1); class 1: one sample at 5. mu_G = 3, M = [-2, 2].
    # Sigma_B = (4 + 4) / 2 = 4; Sigma_W = (1/2) [ (1 + 1) / 2 + 0 ] = 0.5 (the single sample adds 0).
    # NC1 = tr(Sigma_W Sigma_B^+) / C = (0.5 / 4) / 2.
    features = np.array([[0.0], [2.0], [5.0]])
    labels = np.array([0, 0, 1])
    assert within_class_variability(features, labels) == pytest.approx(0.0625)
    assert equinorm(class_means(features, labels)) == pytest.approx(0.0)
    assert equiangularity(class_means(features, labels)) == pytest.approx(0.0)  # two classes: always antipodal


def test_nc1_matches_its_definition_with_explicit_covariances():
    rng = np.random.default_rng(1)
    C, d = 5, 8
    labels = np.concatenate([np.full(k, c) for c, k in enumerate([3, 9, 1, 5, 12])])
    features = rng.normal(size=(len(labels), d)) * rng.uniform(0.5, 2, size=d) + rng.normal(size=(C, d))[labels] * 2
    means = np.stack([features[labels == c].mean(0) for c in range(C)])
    centred = means - means.mean(0)
    sigma_b = centred.T @ centred / C
    sigma_w = sum(np.cov(features[labels == c].T, bias=True).reshape(d, d) for c in range(C)) / C
    expected = np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / C
    assert within_class_variability(features, labels) == pytest.approx(expected, rel=1e-9)
    assert within_class_variability(features.astype(np.float32), labels) == pytest.approx(expected, rel=1e-4)


def test_isotropic_random_features_give_the_expected_values():
    C, d, n = 10, 128, 40
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(C), n)
    draws = []
    for _ in range(30):
        features = 3.0 * rng.normal(size=(C * n, d))
        means = class_means(features, labels)
        classifier = rng.normal(size=(C, d))
        draws.append((within_class_variability(features, labels), equinorm(means), equiangularity(means),
                      classifier_alignment(means, classifier).mean(), self_duality(means, classifier)))
    nc1, cv, angle, align, dual = np.mean(draws, axis=0)
    # Gaussian class means are independent of the within-class scatter, and the centred means'
    # Gram is a (C-1)-dim Wishart with d degrees of freedom: E[NC1] = (n-1)(C-1)/(d-C).
    assert nc1 == pytest.approx((n - 1) * (C - 1) / (d - C), rel=0.05)
    # The centred means' norms follow a chi distribution with d degrees of freedom.
    chi_mean = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    assert cv == pytest.approx(math.sqrt(d - chi_mean**2) / chi_mean, rel=0.15)
    # Cosines scatter around the ETF's -1/(C-1) with variance about 1/d.
    assert angle == pytest.approx((C - 1) / math.sqrt(C * d), rel=0.1)
    # Independent directions: cosine about 0; two independent unit matrices are sqrt(2) apart.
    assert abs(align) < 0.03
    assert dual == pytest.approx(math.sqrt(2), rel=0.05)


def test_more_classes_than_dimensions_stay_finite():
    C, d = 40, 6
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(C), 5)
    features = rng.normal(size=(C, d))[labels] + 0.1 * rng.normal(size=(len(labels), d))
    diag = collapse_diagnostics(features, labels, [(0, 30), (30, 40)], classifier=rng.normal(size=(C, d)))
    values = [diag["nc1"], diag["equinorm"], diag["equiangularity"], diag["self_duality"], *diag["alignment"]]
    assert all(v is not None and math.isfinite(v) for v in values)
    # The pseudo-inverse covers the d between-class directions: the within-class noise is small.
    assert 0 < diag["nc1"] < 0.1
    # No simplex ETF of 40 classes fits in 6 dimensions: the distance is documented to stay positive.
    assert diag["equiangularity"] > 0.5
    # With exactly d + 1 classes the simplex ETF does fit.
    etf = etf_rows(d + 1, d)
    assert equiangularity(etf) == pytest.approx(0.0, abs=1e-6)


def test_degenerate_inputs_follow_the_documented_conventions():
    one_class = collapse_diagnostics(np.ones((4, 3)), np.zeros(4, dtype=int), [(0, 1)], classifier=np.ones((1, 3)))
    assert one_class["nc1"] is None and one_class["equiangularity"] is None and one_class["equinorm"] is None
    same_means = np.zeros((6, 3))
    assert math.isnan(within_class_variability(same_means, np.repeat([0, 1, 2], 2)))
    # Collapsed features (every class mean the same, as in a network whose features all die):
    # no angle is defined, so equiangularity is undefined rather than a distance of 1.
    collapsed = collapse_diagnostics(np.zeros((6, 3)), np.repeat([0, 1, 2], 2), [(0, 3)])
    assert collapsed["equiangularity"] is None and collapsed["equinorm"] is None
    with pytest.raises(ValueError, match="classes without samples: \\[1\\]"):
        class_means(np.ones((3, 2)), np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="classifier has shape"):
        self_duality(np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="differ in length"):
        collapse_diagnostics(np.ones((3, 2)), np.array([0, 1]), [(0, 2)])


def test_group_alignment_averages_within_each_group():
    means = np.array([[1.0, 0], [0, 1.0], [1.0, 0], [1.0, 1.0]])
    classifier = np.array([[1.0, 0], [1.0, 0], [-1.0, 0], [1.0, 0]])
    # cosines: 1, 0, -1, 1/sqrt(2)
    assert group_alignment(means, classifier, [(0, 2), (2, 3), (3, 4)]) == pytest.approx([0.5, -1.0, 1 / math.sqrt(2)])


# --- the runner ---------------------------------------------------------------------------------


class PixelMeans(MethodBase):
    """Nearest class mean on pooled pixels, with ``embed``, ``classify`` and ``classifier_weights``."""

    name = "pixel-means"
    presets = {"quick": {}}
    predict_calls = 0

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images, 4).flatten(1)

    def fit_base(self, session: Session, ctx: Context) -> None:
        self.means = torch.empty(0, 48)
        self.fit_session(session, ctx)

    def fit_session(self, session: Session, ctx: Context) -> None:
        x, y = next(iter(session.train.batches(10_000, augment=False)))
        f = self.embed(x)
        self.means = torch.cat([self.means, torch.stack([f[y == c].mean(0) for c in session.new_classes])])

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(features, self.means)

    def classifier_weights(self) -> torch.Tensor:
        return self.means

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        type(self).predict_calls += 1
        return self.classify(self.embed(images))


def test_the_runner_records_diagnostics_from_the_evaluation_pass(synthetic_benchmark, run_options):
    PixelMeans.predict_calls = 0
    result = run_method(synthetic_benchmark, PixelMeans, "quick", 0, run_options)
    assert result.status == "completed", result.error
    assert PixelMeans.predict_calls == 0  # evaluated as classify(embed(x)): one pass, features kept
    diag = result.diagnostics
    T = len(synthetic_benchmark.schedule)
    assert len(diag["sessions"]) == len(diag["seconds"]) == T
    for t, entry in enumerate(diag["sessions"]):
        assert "error" not in entry
        assert len(entry["alignment"]) == t + 1
        assert entry["nc1"] > 0 and entry["self_duality"] is not None
    # The session's value equals the metric on features computed from scratch.
    last = synthetic_benchmark.schedule.num_seen(T - 1)
    rows = np.flatnonzero(synthetic_benchmark.test.labels < last)
    x = torch.cat(list(iterate_images(synthetic_benchmark.test.images, synthetic_benchmark.eval_transform, 512,
                                      torch.device("cpu"), rows)))
    features = F.adaptive_avg_pool2d(x, 4).flatten(1).numpy()
    expected = within_class_variability(features, synthetic_benchmark.test.labels[rows])
    assert diag["sessions"][-1]["nc1"] == pytest.approx(expected, rel=1e-5)
    record = build_record(RunKey("synthetic@1", "pixel-means", "quick", 0), synthetic_benchmark, PixelMeans, "test",
                          result, "now", "cpu", None)
    assert json.loads(json.dumps(record, allow_nan=False))["diagnostics"] == diag


def test_a_method_without_embed_records_null_and_a_failing_classifier_is_an_error_not_a_failure(
        synthetic_benchmark, run_options):
    class PredictOnly(PixelMeans):
        name = "predict-only"
        embed = None  # no embed: no diagnostics

        def fit_base(self, session, ctx):
            self.means = torch.empty(0, 48)
            self.fit_session(session, ctx)

        def fit_session(self, session, ctx):
            x, y = next(iter(session.train.batches(10_000, augment=False)))
            f = F.adaptive_avg_pool2d(x, 4).flatten(1)
            self.means = torch.cat([self.means, torch.stack([f[y == c].mean(0) for c in session.new_classes])])

        def predict(self, images):
            return self.classify(F.adaptive_avg_pool2d(images, 4).flatten(1))

    plain = run_method(synthetic_benchmark, PredictOnly, "quick", 0, run_options)
    assert plain.status == "completed" and plain.diagnostics is None
    record = build_record(RunKey("synthetic@1", "predict-only", "quick", 0), synthetic_benchmark, PredictOnly, "test",
                          plain, "now", "cpu", None)
    assert "diagnostics" in record and record["diagnostics"] is None

    class BrokenWeights(PixelMeans):
        name = "broken-weights"

        def classifier_weights(self):
            return self.means[:1]  # wrong shape

    broken = run_method(synthetic_benchmark, BrokenWeights, "quick", 0, run_options)
    assert broken.status == "completed"
    for entry in broken.diagnostics["sessions"]:
        assert entry["nc1"] is None and "classifier_weights returned (1, 48)" in entry["error"]


def test_a_method_with_embed_but_no_classify_is_embedded_for_the_diagnostics(synthetic_benchmark, run_options):
    class EmbedOnly(PixelMeans):
        name = "embed-only"
        classify_fn = PixelMeans.classify
        classify = None
        classifier_weights = None

        def predict(self, images):
            type(self).predict_calls += 1
            return self.classify_fn(self.embed(images))

    EmbedOnly.predict_calls = 0
    result = run_method(synthetic_benchmark, EmbedOnly, "quick", 0, run_options)
    assert result.status == "completed" and EmbedOnly.predict_calls > 0
    last = result.diagnostics["sessions"][-1]
    assert last["nc1"] > 0 and last["self_duality"] is None and last["alignment"] is None


# --- every registered method: predict(x) == classify(embed(x)) ----------------------------------

REGISTERED = discover().names()


@pytest.fixture(scope="module")
def shared_options(tmp_path_factory) -> RunOptions:
    return RunOptions(cache_dir=tmp_path_factory.mktemp("cache"), log=lambda msg: None, isolation="none")


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_method_predicts_through_embed_and_classify(name, shared_options):
    method_cls = discover().get(name)
    instances: list = []
    watched = type(f"Watched{method_cls.__name__}", (method_cls,), {"__init__": lambda self: instances.append(self)})
    bench = make_synthetic_benchmark(sessions=2)
    result = run_method(bench, watched, "smoke", 0, shared_options)
    assert result.status == "completed", result.error and result.error["traceback"]

    method = instances[-1]
    assert all(callable(getattr(method, f, None)) for f in ("embed", "classify", "classifier_weights"))
    rows = np.flatnonzero(bench.test.labels < bench.schedule.num_seen(len(bench.schedule) - 1))
    for x in iterate_images(bench.test.images, bench.eval_transform, 32, torch.device("cpu"), rows):
        features = method.embed(x)
        torch.testing.assert_close(method.classify(features), method.predict(x), rtol=0, atol=1e-6)
    weights = method.classifier_weights()
    assert weights.shape == (bench.schedule.num_seen(len(bench.schedule) - 1), features.shape[1])

    diag = result.diagnostics
    assert len(diag["sessions"]) == len(bench.schedule)
    for t, entry in enumerate(diag["sessions"]):
        assert "error" not in entry, entry["error"]
        assert entry["nc1"] is not None and entry["self_duality"] is not None
        assert len(entry["alignment"]) == t + 1
