"""NC-FSCIL (``etf``) and its ablations: the ETF, the loss, the modules and the frozen-backbone stage."""

import json
import math
from dataclasses import replace
from importlib.resources import files

import pytest
import torch
from fscil_bench.baselines.etf import ETF, PRESETS
from fscil_bench.baselines.etf_ce import ETFCrossEntropy
from fscil_bench.baselines.etf_linear_ce import ETFLinearCrossEntropy

from fscil_bench.models import build_backbone
from fscil_bench.models.etf import FixedETFClassifier, simplex_etf
from fscil_bench.models.neck import ProjectionNeck
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import make_session, run_method
from fscil_bench.toolkit.losses import dot_regression_loss, inverse_frequency_weights
from fscil_bench.toolkit.training import SGDRecipe, StepRecipe

# --- the simplex ETF -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [100, 200])
def test_etf_columns_are_unit_norm_with_equal_negative_cosines(k):
    m = simplex_etf(k, 512, seed=3).double()
    assert m.shape == (512, k)
    gram = m.T @ m
    assert torch.allclose(gram.diagonal(), torch.ones(k, dtype=torch.float64), atol=1e-5)
    off = gram[~torch.eye(k, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (k - 1)), atol=1e-5)


def test_etf_is_reproducible_and_fits_up_to_d_plus_one_classes():
    assert torch.equal(simplex_etf(100, 512, seed=7), simplex_etf(100, 512, seed=7))
    assert not torch.allclose(simplex_etf(100, 512, seed=7), simplex_etf(100, 512, seed=8))
    m = simplex_etf(17, 16, seed=0).double()  # K = d + 1: the largest ETF that fits
    gram = m.T @ m
    assert torch.allclose(gram.diagonal(), torch.ones(17, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(gram[0, 1:], torch.full((16,), -1 / 16, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match="ETF of 514 classes needs at least 513 dimensions"):
        simplex_etf(514, 512)
    with pytest.raises(ValueError, match="at least 2 classes"):
        simplex_etf(1, 512)


def test_fixed_etf_classifier_gives_the_seen_classes_cosines_and_learns_nothing():
    head = FixedETFClassifier(10, 16, seed=0)
    assert list(head.parameters()) == []
    h = head.prototypes[:, 2].unsqueeze(0)  # a feature equal to class 2's prototype
    logits = head(h, num_seen=6)
    assert logits.shape == (1, 6)
    assert logits.argmax().item() == 2 and math.isclose(logits[0, 2].item(), 1.0, abs_tol=1e-5)
    assert math.isclose(logits[0, 0].item(), -1 / 9, abs_tol=1e-5)


# --- the dot-regression loss ---------------------------------------------------------------

# Prototypes in 2-D: class 0 -> (1, 0), class 1 -> (0, 1) (columns).
PROTOS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_dot_regression_matches_hand_computed_values():
    h = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    y = torch.tensor([0, 1])
    # Sample 0: h^T w_0 = 0.6 -> (0.6 - 1)^2 = 0.16; sample 1: h^T w_1 = 0.8 -> (0.8 - 1)^2 = 0.04.
    # L = 1/2 * mean(0.16, 0.04) = 1/2 * 0.10 = 0.05.
    assert math.isclose(dot_regression_loss(h, y, PROTOS).item(), 0.05, abs_tol=1e-6)
    # A feature on its prototype costs nothing; an orthogonal one costs 1/2 * (0 - 1)^2 = 0.5.
    assert dot_regression_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), PROTOS).item() == 0.0
    assert math.isclose(dot_regression_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), PROTOS).item(), 0.5)


def test_a_dot_regression_gradient_step_moves_features_toward_their_prototypes():
    etf = simplex_etf(10, 32, seed=1)
    h = torch.nn.functional.normalize(torch.randn(6, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.tensor([0, 3, 3, 5, 9, 1])
    h.requires_grad_(True)
    dot_regression_loss(h, y, etf).backward()
    before = (h * etf[:, y].T).sum(1)
    after = ((h - 0.5 * h.grad) * etf[:, y].T).sum(1)
    assert (after > before).all()
    # The gradient of sample i is (h_i^T w_{y_i} - 1) w_{y_i} / B: along its own prototype only.
    expected = (before - 1).unsqueeze(1) * etf[:, y].T / len(y)
    assert torch.allclose(h.grad, expected.detach(), atol=1e-6)


def test_inverse_frequency_reweighting_matches_a_hand_computed_example():
    y = torch.tensor([0, 0, 0, 1])
    # B = 4 samples, C = 2 classes, n_0 = 3, n_1 = 1: a_i = B / (C n_{y_i}) -> 4/6 = 2/3 and 4/2 = 2.
    assert torch.allclose(inverse_frequency_weights(y), torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0]))
    h = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [1.0, 0.0]])
    # Per-sample losses 1/2 (dot - 1)^2: dots 1, 0.6, 0.8 (class 0) and 0 (class 1) -> 0, 0.08, 0.02, 0.5.
    # Unweighted: (0 + 0.08 + 0.02 + 0.5) / 4 = 0.15.
    assert math.isclose(dot_regression_loss(h, y, PROTOS).item(), 0.15, abs_tol=1e-6)
    # Weighted: (2/3 * (0 + 0.08 + 0.02) + 2 * 0.5) / 4 = (0.0667 + 1) / 4 = 0.26667,
    # i.e. the mean of the class means: (0.10 / 3 + 0.5) / 2.
    assert math.isclose(dot_regression_loss(h, y, PROTOS, reweight=True).item(), (0.1 / 3 + 0.5) / 2, abs_tol=1e-6)
    # A balanced batch is left as it is.
    assert torch.equal(inverse_frequency_weights(torch.tensor([4, 2, 2, 4])), torch.ones(4))


# --- backbone and neck -----------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("size", [32, 84])
def test_resnet12_shapes(size):
    net = build_backbone("resnet12").eval()
    assert net.out_dim == 640
    assert net(torch.randn(2, 3, size, size)).shape == (2, 640)
    assert net.forward_map(torch.randn(1, 3, size, size)).shape == (1, 640, size // 16, size // 16)


def test_neck_output_is_unit_norm_512d():
    neck = ProjectionNeck(64)
    for x in (torch.randn(5, 64), torch.randn(5, 64, 3, 3)):
        h = neck(x)
        assert h.shape == (5, 512)
        assert torch.allclose(h.norm(dim=1), torch.ones(5), atol=1e-5)
    assert neck.mlp[0].out_features == 128 and neck.mlp[-1].bias is None and neck.shortcut.bias is None


def test_step_schedule_decays_at_its_milestones():
    recipe = SGDRecipe(epochs=10, lr=1.0, schedule="step", milestones=(5, 8), gamma=0.1)
    per_epoch = 10
    assert [recipe.lr_at(s, per_epoch) for s in (0, 49, 50, 79, 80, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert replace(recipe, warmup_epochs=1).lr_at(0, per_epoch) == pytest.approx(0.1)  # warm-up first


# --- the methods through the runner ------------------------------------------------------------

TINY = replace(
    PRESETS["quick"]["default"],
    backbone="convnet4-small",
    base=SGDRecipe(epochs=2, lr=0.05, batch_size=16, warmup_epochs=0.5),
    session=StepRecipe(steps=4, lr=0.1, batch_size=8),
    feature_dim=16,
    augmented_views=1,
    warm_start=None,  # from scratch here; the warm start has its own test
    train_backbone=True,
)


def tiny(method_cls):
    """The method with an extra ``tiny`` preset (a 16-d ETF: the synthetic benchmark has 10 classes)."""
    params = {f: getattr(TINY, f) for f in TINY.__dataclass_fields__}
    hp = method_cls.presets["quick"]["default"].__class__(**params)

    class Tiny(method_cls):
        presets = {**method_cls.presets, "tiny": hp}
        snapshots: list = []

        def fit_session(self, session, ctx):
            before = {k: v.clone() for k, v in self.model.backbone.state_dict().items()}
            neck = [p.detach().clone() for p in self.model.neck.parameters()]
            super().fit_session(session, ctx)
            Tiny.snapshots.append((before, self.model.backbone.state_dict(), neck, list(self.model.neck.parameters())))

    Tiny.__name__ = f"Tiny{method_cls.__name__}"
    return Tiny


@pytest.mark.parametrize("method_cls", [ETF, ETFCrossEntropy, ETFLinearCrossEntropy])
def test_incremental_sessions_leave_the_backbone_untouched_and_declare_the_kept_means(
        method_cls, synthetic_benchmark, run_options):
    bench = synthetic_benchmark
    cls = tiny(method_cls)
    result = run_method(bench, cls, "tiny", 0, run_options)
    assert result.status == "completed", result.error
    assert len(cls.snapshots) == len(bench.schedule) - 1
    for before, after, neck_before, neck_after in cls.snapshots:
        assert before.keys() == after.keys() and any("running_mean" in k for k in before)
        for k in before:
            assert torch.equal(before[k], after[k]), f"backbone {k} changed in an incremental session"
        assert any(not torch.equal(a, b) for a, b in zip(neck_before, neck_after)), "the neck was not fine-tuned"
    # One mean backbone feature per class learned so far is kept, and declared.
    memory = result.memory
    assert memory["declared"] is True
    assert memory["feature_vectors"] == bench.schedule.num_classes
    assert memory["bytes"] == bench.schedule.num_classes * build_backbone("convnet4-small").out_dim * 4
    assert memory["exemplars"] == 0
    assert result.extra["backbone_init"] == "trained from scratch on the base session"
    assert result.extra["base_model"]["cache_hit"] is False


def test_a_rerun_loads_the_cached_base_model_and_repeats_the_run(synthetic_benchmark, run_options):
    first = run_method(synthetic_benchmark, tiny(ETF), "tiny", 0, run_options)
    again = run_method(synthetic_benchmark, tiny(ETF), "tiny", 0, run_options)
    assert again.extra["base_model"]["cache_hit"] is True
    assert again.extra["base_model"]["key"] == first.extra["base_model"]["key"]
    # The ablations train with other losses: their base models are cached under other recipes.
    assert len({ETF.kind, ETFCrossEntropy.kind, ETFLinearCrossEntropy.kind}) == 3
    for a, b in zip(first.predictions, again.predictions):
        assert (a == b).all()


def test_a_warm_start_begins_from_the_shared_cross_entropy_base_model(synthetic_benchmark, run_options):
    from fscil_bench.toolkit.base_models import cross_entropy_base_model

    warm = SGDRecipe(epochs=1, lr=0.05, batch_size=16)
    cls = tiny(ETF)
    # No base epochs of its own: the backbone must be exactly the cross-entropy model's.
    cls.presets = {**cls.presets, "tiny": replace(cls.presets["tiny"], warm_start=warm, base=replace(TINY.base, epochs=0))}
    captured = {}

    class Capture(cls):
        def fit_base(self, session, ctx):
            super().fit_base(session, ctx)
            captured["backbone"] = {k: v.clone() for k, v in self.model.backbone.state_dict().items()}
            captured["ce"] = cross_entropy_base_model(session, ctx, TINY.backbone, warm).backbone.state_dict()

    result = run_method(synthetic_benchmark, Capture, "tiny", 0, run_options)
    assert result.status == "completed", result.error
    assert captured["backbone"].keys() == captured["ce"].keys()
    assert all(torch.equal(captured["backbone"][k], captured["ce"][k]) for k in captured["ce"])
    assert result.extra["backbone_init"].startswith("the shared cross-entropy base model ")
    scratch = run_method(synthetic_benchmark, tiny(ETF), "tiny", 0, run_options)
    assert scratch.extra["base_model"]["key"] != result.extra["base_model"]["key"]
    both = tiny(ETF)
    both.presets = {**both.presets, "tiny": replace(cls.presets["tiny"], pretrained=__file__)}
    failed = run_method(synthetic_benchmark, both, "tiny", 0, run_options)
    assert failed.status == "failed" and "exclusive" in failed.error["message"]


def test_a_frozen_warm_backbone_trains_only_the_neck_on_shared_cached_features(synthetic_benchmark, run_options,
                                                                               monkeypatch):
    import fscil_bench.toolkit.neck_learner as learner
    from fscil_bench.toolkit.base_models import cross_entropy_base_model
    from fscil_bench.toolkit.features import class_means, extract_features

    trained = []

    def recording(modules, features, labels, loss_fn, recipe, ctx, desc, generator=None):
        history = learner.__dict__["_real_train_on_features"](modules, features, labels, loss_fn, recipe, ctx, desc, generator)
        trained.append(([type(m).__name__ for m in modules], len(features), history))
        return history

    monkeypatch.setitem(learner.__dict__, "_real_train_on_features", learner.train_on_features)
    monkeypatch.setattr(learner, "train_on_features", recording)

    warm = SGDRecipe(epochs=1, lr=0.05, batch_size=16)
    frozen = replace(TINY, warm_start=warm, train_backbone=False, base=replace(TINY.base, epochs=2))
    captured = {}

    class Capture(tiny(ETF)):
        presets = {"tiny": frozen}

        def fit_base(self, session, ctx):
            super().fit_base(session, ctx)
            captured["key"] = ctx.extra["base_model"]["key"]
            ce = cross_entropy_base_model(session, ctx, TINY.backbone, warm).backbone
            captured["same_backbone"] = all(torch.equal(a, b) for a, b in zip(
                self.model.backbone.state_dict().values(), ce.state_dict().values()))
            feats, labels = extract_features(ce, session.train, ctx)
            captured["means"] = (self.model.base_means, class_means(feats, labels, session.new_classes))

    result = run_method(synthetic_benchmark, Capture, "tiny", 0, run_options)
    assert result.status == "completed", result.error
    frozen_key = captured["key"]
    assert captured["same_backbone"], "the base session changed the warm-started backbone"
    kept, expected = captured["means"]
    assert torch.allclose(kept, expected, atol=1e-5)
    (modules, rows, history), = trained  # neck and ETF, on one feature row per base training image
    assert modules == ["ProjectionNeck", "FixedETFClassifier"] and rows == len(make_session(synthetic_benchmark, 0).train)
    assert len(history) == 2 and history[-1] < history[0]
    assert len(list((run_options.cache_dir / "features").glob("*.npz"))) == 1  # the shared feature cache entry
    end_to_end = replace(frozen, train_backbone=True)
    Capture.presets = {"tiny": end_to_end}
    assert run_method(synthetic_benchmark, Capture, "tiny", 0, run_options).status == "completed"
    assert captured["key"] != frozen_key
    assert not captured["same_backbone"]
    Capture.presets = {"tiny": replace(frozen, warm_start=None)}
    failed = run_method(synthetic_benchmark, Capture, "tiny", 0, run_options)
    assert failed.status == "failed" and "train_backbone=False" in failed.error["message"]


# --- registration, presets, reported numbers -----------------------------------------------


def test_methods_are_registered_with_quick_and_paper_presets():
    registry = discover()
    for name in ("etf", "etf-ce", "etf-linear-ce"):
        cls = registry.get(name)
        assert {"quick", "paper"} <= set(cls.presets)
        for family in ("glyphs100", "cifar100", "mini_imagenet", "cub200", "something-else"):
            cls.resolve_preset("paper", family)
            cls.resolve_preset("quick", family)
    paper = {f: ETF.resolve_preset("paper", f) for f in ("cifar100", "mini_imagenet", "cub200")}
    assert paper["cifar100"].backbone == paper["mini_imagenet"].backbone == "resnet12"
    assert paper["cub200"].backbone == "resnet18" and paper["cub200"].base.lr == 0.025
    assert paper["mini_imagenet"].base.schedule == "step" and paper["mini_imagenet"].base.epochs == 500
    assert all(hp.feature_dim == 512 and hp.loss_weight == 10 and hp.base.batch_size == 512 for hp in paper.values())
    assert paper["cifar100"].session_reweight and not paper["cub200"].session_reweight
    assert ETFCrossEntropy.resolve_preset("paper", "cifar100").loss_weight == 1.0
    assert ETFCrossEntropy.resolve_preset("quick", "glyphs100").scale > 0


def test_reported_results_ship_with_the_package():
    entries = json.loads(files("fscil_bench.reporting").joinpath("reported_results.json").read_text())
    etf = {e["benchmark"]: e for e in entries if e["method"] == "etf"}
    assert set(etf) == {"cifar100", "mini_imagenet", "cub200"}
    assert len(etf["cifar100"]["accuracy"]) == len(etf["mini_imagenet"]["accuracy"]) == 9
    assert len(etf["cub200"]["accuracy"]) == 11
    for e in etf.values():
        assert e["preset"] == "paper" and e["source"].startswith("Yang et al., ICLR 2023, Table")
        assert abs(sum(e["accuracy"]) / len(e["accuracy"]) - e["average"]) < 0.01


def test_pretrained_backbone_weights_are_recorded_and_a_missing_file_fails_clearly(synthetic_benchmark, run_options, tmp_path):
    weights = tmp_path / "backbone.pt"
    torch.save(build_backbone("convnet4-small").state_dict(), weights)
    cls = tiny(ETF)
    cls.presets = {"pre": replace(cls.presets["tiny"], pretrained=str(weights)),
                   "missing": replace(cls.presets["tiny"], pretrained=str(tmp_path / "nope.pt"))}
    result = run_method(synthetic_benchmark, cls, "pre", 0, run_options)
    assert result.status == "completed", result.error
    assert result.extra["backbone_init"].startswith("pretrained weights backbone (sha256 ")
    assert str(weights) in result.extra["extra_data"] and result.extra["pretrained"]["file"] == str(weights)
    assert result.extra["base_model"]["recipe"]["pretrained_sha256"] == result.extra["pretrained"]["sha256"]
    failed = run_method(synthetic_benchmark, cls, "missing", 0, run_options)
    assert failed.status == "failed" and failed.error["type"] == "WeightsError"
    assert "nope.pt" in failed.error["message"]
