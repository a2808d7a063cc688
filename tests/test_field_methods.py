"""The field's FSCIL methods CEC, TEEN, FACT and the imbalance-aware joint oracle, and the toolkit
pieces they stand on (CEC's attention, FACT's backbone cut, the imbalance fixes)."""

from __future__ import annotations

import dataclasses
import json
import math
from importlib.resources import files

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_synthetic_benchmark
from fscil_bench.baselines.cec import CEC
from fscil_bench.baselines.fact import FACT, bimodal_scores
from fscil_bench.baselines.joint_balanced import JointBalanced
from fscil_bench.baselines.teen import TEEN, calibrate
from fscil_bench.models import build_backbone
from fscil_bench.results.store import RunKey
from fscil_bench.run.grid import build_record
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import RunOptions, run_method
from fscil_bench.toolkit.backbone_split import split_backbone
from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD
from fscil_bench.toolkit.imbalance import (
    MixedTargets,
    balanced_softmax_loss,
    imbalanced_sam_step,
    log_prior,
    minority_draw,
    paste_minority,
)
from fscil_bench.toolkit.set_attention import PrototypeAttentionHead

METHODS = [CEC, TEEN, FACT, JointBalanced]


def watched(method_cls: type, instances: list, **overrides) -> type:
    """``method_cls`` with a ``tiny`` preset (its ``smoke`` one with ``overrides``) that records its instances."""
    hp = dataclasses.replace(method_cls.resolve_preset("smoke", "synthetic"), **overrides)
    return type(f"Watched{method_cls.__name__}", (method_cls,),
                {"presets": {**method_cls.presets, "tiny": hp}, "__init__": lambda self: instances.append(self)})


@pytest.fixture(scope="module")
def shared_options(tmp_path_factory) -> RunOptions:
    return RunOptions(cache_dir=tmp_path_factory.mktemp("cache"), log=lambda msg: None,
                      isolation="none")  # the tests read the method objects they make


@pytest.fixture(scope="module")
def tiny_runs(shared_options) -> dict:
    """Each method's smoke run on the synthetic benchmark (and the method object), computed once."""
    bench = make_synthetic_benchmark()
    cache: dict = {}

    def get(method_cls: type):
        if method_cls not in cache:
            instances: list = []
            result = run_method(bench, watched(method_cls, instances), "tiny", 0, shared_options)
            cache[method_cls] = (result, instances[-1])
        return cache[method_cls]

    return {"bench": bench, "get": get}


# --- every method ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method_cls", METHODS, ids=lambda c: c.name)
def test_each_method_completes_a_tiny_schedule_and_declares_what_it_keeps(method_cls, tiny_runs):
    bench = tiny_runs["bench"]
    result, method = tiny_runs["get"](method_cls)
    assert result.status == "completed", result.error and result.error["traceback"]
    assert result.sessions_done == len(bench.schedule) and len(result.metrics["session_acc"]) == len(bench.schedule)
    classes = bench.schedule.num_classes
    memory = result.memory
    if method_cls is JointBalanced:
        pool = 8 * bench.schedule.num_base_classes  # smoke keeps 8 base images per class
        shots = sum(len(s.train_indices) for s in bench.schedule.sessions[1:])
        assert memory["exemplars"] == len(method.bank) == pool + shots
        assert memory["feature_vectors"] == pool + shots * (1 + 2)  # the test view + 2 augmented views per shot
        assert memory["bytes"] == method.bank.nbytes + memory["feature_vectors"] * method.backbone.out_dim * 4
    else:
        kept = method.prototypes.shape[0] + (len(method.virtual) if method_cls is FACT else 0)
        assert method.prototypes.shape[0] == classes
        assert memory["exemplars"] == 0 and memory["feature_vectors"] == kept
        assert memory["bytes"] == kept * method.prototypes.shape[1] * 4


def _reference_logits(method, images: torch.Tensor) -> torch.Tensor:
    """The method's logits recomputed from its state by the definitions, around embed/classify."""
    if isinstance(method, FACT):
        return bimodal_scores(method.model.backbone(images), method.prototypes, method.virtual, method.temperature,
                              method.eta, method.top_k)
    features = method.backbone(images)
    if isinstance(method, CEC):
        return method.head.literal(method.prototypes, features)  # one [P; x] set per query
    if isinstance(method, TEEN):
        return method.temperature * F.normalize(features, dim=1) @ F.normalize(method.prototypes, dim=1).T
    return features @ method.head.weight[: method.num_seen].T  # joint-balanced: the bias-free linear head


@pytest.mark.parametrize("method_cls", METHODS, ids=lambda c: c.name)
def test_each_method_scores_the_last_session_as_its_definition_and_the_record_says(method_cls, tiny_runs):
    bench = tiny_runs["bench"]
    result, method = tiny_runs["get"](method_cls)
    images = bench.eval_transform(torch.from_numpy(bench.test.images), None)
    with torch.no_grad():
        logits = method.classify(method.embed(images))
        torch.testing.assert_close(logits, _reference_logits(method, images), rtol=1e-4, atol=1e-4)
    labels = torch.from_numpy(bench.test.labels)
    assert logits.shape == (len(labels), bench.schedule.num_classes)
    accuracy = int((logits.argmax(1) == labels).sum()) / len(labels)
    assert result.metrics["session_acc"][-1] == pytest.approx(accuracy, abs=1e-9)


def test_methods_are_registered_with_quick_paper_and_smoke_presets():
    registry = discover()
    for cls in METHODS:
        assert registry.get(cls.name) is cls and cls.paper
        assert {"quick", "paper", "smoke"} <= set(cls.presets)
        for preset in ("quick", "paper", "smoke"):
            for family in ("glyphs100", "cifar100", "mini_imagenet", "cub200"):
                assert dataclasses.is_dataclass(cls.resolve_preset(preset, family))
    assert "cec-episodic" not in registry.names()
    # quick: the shared quick base model (FACT, whose base is its contribution, starts from it).
    for cls in (CEC, TEEN, JointBalanced):
        hp = cls.resolve_preset("quick", "glyphs100")
        assert (hp.backbone, hp.base) == (QUICK_BACKBONE, QUICK_BASE_SGD), cls.name
    assert FACT.resolve_preset("quick", "glyphs100").warm_start == QUICK_BASE_SGD
    assert JointBalanced.oracle and not any(c.oracle for c in (CEC, TEEN, FACT))


def test_paper_presets_follow_the_official_scripts():
    cec = {f: CEC.resolve_preset("paper", f) for f in ("cifar100", "mini_imagenet", "cub200", "glyphs100")}
    assert [cec[f].encoder_lr for f in ("cifar100", "mini_imagenet", "cub200")] == [0.002, 0.0002, 0.0002]
    assert all(hp.attention_lr == 0.0002 and hp.ways == 15 and hp.shots == 1 and hp.epochs == 100
               and hp.episodes_per_epoch == 50 and hp.base_classifier == "cosine" for hp in cec.values())
    assert cec["cub200"].queries == 10 and cec["cifar100"].queries == 15 and cec["glyphs100"] == cec["cifar100"]
    assert cec["cub200"].base.milestones == (30, 40, 60, 80) and cec["cub200"].pretrained
    teen = {f: TEEN.resolve_preset("paper", f) for f in ("cifar100", "mini_imagenet", "cub200")}
    assert [(t.temperature, t.tau, t.alpha) for t in teen.values()] == [(16, 16, 0.1), (32, 16, 0.5), (32, 16, 0.5)]
    assert [t.base.epochs for t in teen.values()] == [600, 1000, 400] and teen["cub200"].base.lr == 0.004
    fact = {f: FACT.resolve_preset("paper", f) for f in ("cifar100", "mini_imagenet", "cub200")}
    assert [(h.balance, h.loss_start_epoch, h.alpha) for h in fact.values()] == [(0.001, 0, 0.5), (0.01, 150, 0.5),
                                                                                (0.01, 0, 2.0)]
    assert [h.base.batch_size for h in fact.values()] == [256, 128, 256] and not fact["cifar100"].shared_virtual
    joint = {f: JointBalanced.resolve_preset("paper", f) for f in ("cifar100", "mini_imagenet", "cub200")}
    assert [(j.session.epochs, j.session.lr, j.cmo_prob) for j in joint.values()] == [(500, 0.1, 0.2), (500, 0.1, 0.2),
                                                                                      (700, 0.001, 0.1)]
    assert joint["cifar100"].backbone == "resnet20-wide" and build_backbone("resnet20-wide").out_dim == 128


def test_reported_numbers_of_cec_fact_and_teen_ship_with_their_sources():
    entries = json.loads(files("fscil_bench.reporting").joinpath("reported_results.json").read_text())
    rows = {(e["method"], e["benchmark"]): e for e in entries if e["method"] in ("cec", "fact", "teen")}
    assert set(rows) == {(m, b) for m in ("cec", "fact", "teen") for b in ("cifar100", "mini_imagenet", "cub200")} - {
        ("teen", "cub200")}  # TEEN's CUB middle sessions are not verified
    for (method, bench), e in rows.items():
        assert len(e["accuracy"]) == (11 if bench == "cub200" else 9) and e["preset"] == "paper"
        if "average" in e:
            assert abs(sum(e["accuracy"]) / len(e["accuracy"]) - e["average"]) < 0.01
        assert ("FACL" in e["source"]) == (bench == "cifar100"), e["source"]
    assert rows[("cec", "cub200")]["accuracy"][-1] == 52.28 and rows[("fact", "cifar100")]["accuracy"][-1] == 52.10


# --- CEC -------------------------------------------------------------------------------------------


def test_cec_attention_fast_path_equals_the_literal_definition_values_and_gradients():
    torch.manual_seed(0)
    head = PrototypeAttentionHead(12, scale=16.0).eval()
    prototypes = (3 * torch.randn(9, 12)).requires_grad_()
    queries = 3 * torch.randn(20, 12)
    literal, fast = head.literal(prototypes, queries), head.fast(prototypes, queries)
    torch.testing.assert_close(fast, literal, rtol=1e-5, atol=1e-5)
    g_literal = torch.autograd.grad(literal.logsumexp(1).sum(), [prototypes, *head.parameters()])
    g_fast = torch.autograd.grad(fast.logsumexp(1).sum(), [prototypes, *head.parameters()])
    for a, b in zip(g_literal, g_fast):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # With dropout active (training mode) the literal sets are used; each query sees every prototype.
    head.train()
    assert head(prototypes, queries).shape == (20, 9)


def test_cec_rotations_are_the_official_quarter_turns():
    # CEC's 90 degrees is transpose(2, 3) then flip(2), 270 is transpose(2, 3) then flip(3).
    from fscil_bench.baselines.cec import _Turned

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).view(2, 3, 4, 4)
    identity = torch.nn.Identity()
    assert torch.equal(_Turned(identity, 1)(x), x.transpose(2, 3).flip(2))
    assert torch.equal(_Turned(identity, 2)(x), x.flip(2).flip(3))
    assert torch.equal(_Turned(identity, 3)(x), x.transpose(2, 3).flip(3))


def test_cec_meta_trains_the_attention_and_can_fine_tune_the_encoder(tiny_runs, shared_options):
    result, method = tiny_runs["get"](CEC)
    info = result.extra["cec"]
    assert info["episodes"] == 2 * 3 and math.isfinite(info["first_epoch_loss"])
    initial = PrototypeAttentionHead(method.head.attention.fc.in_features)
    moved = [not torch.equal(a, b) for a, b in zip(initial.state_dict().values(), method.head.state_dict().values())]
    assert any(moved)
    instances: list = []
    tuned = run_method(tiny_runs["bench"], watched(CEC, instances, encoder_lr=0.01), "tiny", 0, shared_options)
    assert tuned.status == "completed", tuned.error and tuned.error["traceback"]
    frozen_backbone = method.backbone.state_dict()
    assert any(not torch.equal(frozen_backbone[k], v) for k, v in instances[-1].backbone.state_dict().items())


# --- TEEN ------------------------------------------------------------------------------------------


def test_teen_calibration_formula_on_hand_made_prototypes():
    base = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    new = torch.tensor([[3.0, 4.0]])  # unit (0.6, 0.8); cosines 0.6 and 0.8
    tau = 5 * math.log(3)  # softmax(tau * (0.6, 0.8)) = (1/4, 3/4)
    expected = 0.5 * torch.tensor([0.6, 0.8]) + 0.5 * torch.tensor([1.0, 3.0]) / math.sqrt(10)
    torch.testing.assert_close(calibrate(new, base, alpha=0.5, tau=tau)[0], expected)
    torch.testing.assert_close(calibrate(new, base, alpha=0.0, tau=tau)[0], torch.tensor([0.6, 0.8]))
    # A very sharp softmax pulls towards the single nearest base prototype.
    torch.testing.assert_close(calibrate(new, base, alpha=1.0, tau=1e4)[0], torch.tensor([0.0, 1.0]))


def test_teen_calibrates_each_session_once_against_the_base_prototypes(tiny_runs):
    bench = tiny_runs["bench"]
    result, method = tiny_runs["get"](TEEN)
    assert result.status == "completed"
    from fscil_bench.toolkit.features import class_means

    b = bench.schedule.num_base_classes
    session = bench.schedule.sessions[-1]
    images = torch.from_numpy(bench.train.images[session.train_indices])
    feats = method.backbone(bench.eval_transform(images, None))
    labels = torch.from_numpy(bench.train.labels[session.train_indices])
    means = class_means(feats, labels, list(session.classes))
    expected = calibrate(means, method.prototypes[:b], method.alpha, method.tau)
    torch.testing.assert_close(method.prototypes[-len(session.classes):], expected, rtol=1e-4, atol=1e-5)
    assert (method.prototypes[b:].norm(dim=1) <= 1 + 1e-6).all()  # convex mixtures of unit vectors


# --- FACT ------------------------------------------------------------------------------------------


def test_fact_bimodal_inference_mixes_the_two_softmaxes_as_the_code_does():
    prototypes = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    virtual = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[3.0, 4.0]])
    # Column normalisation of prototypes^T: dimension 0 has (2, 0, 1) / sqrt(5), dimension 1 (0, 1, 1) / sqrt(2).
    projection = torch.tensor([[2, 0, 1], [0, 1, 1]]) / torch.tensor([[math.sqrt(5)], [math.sqrt(2)]])
    s = torch.tensor([[0.6, 0.8]])
    cos = F.normalize(f, dim=1) @ F.normalize(prototypes, dim=1).T
    expected = 0.1 * torch.softmax(s @ projection, 1) + 0.9 * torch.softmax(16 * cos, 1)
    torch.testing.assert_close(bimodal_scores(f, prototypes, virtual, 16.0, 0.1, 40), expected.log())
    # Only the top-k virtual similarities count; eta 0 is the plain cosine classifier.
    top1 = 0.5 * torch.softmax(torch.tensor([[0.0, 0.8]]) @ projection, 1) + 0.5 * torch.softmax(16 * cos, 1)
    torch.testing.assert_close(bimodal_scores(f, prototypes, virtual, 16.0, 0.5, 1), top1.log())
    torch.testing.assert_close(bimodal_scores(f, prototypes, virtual, 16.0, 0.0, 40), torch.log_softmax(16 * cos, 1))


def test_fact_reserves_virtual_prototypes_and_trains_all_four_losses(tiny_runs, shared_options):
    bench = tiny_runs["bench"]
    result, method = tiny_runs["get"](FACT)
    b, n = bench.schedule.num_base_classes, bench.schedule.num_classes
    assert method.virtual.shape == (n - b, method.prototypes.shape[1])
    torch.testing.assert_close(method.virtual.norm(dim=1), torch.ones(n - b))
    losses = result.extra["fact"]
    assert all(losses[k] > 0 for k in ("l1", "l2", "l3", "l4")) and losses["mixed_pairs"] > 0
    # The official wiring: L2 scores against the frozen initial rows, L3/L4 train the virtual rows used at test.
    assert not torch.allclose(F.normalize(method.model.frozen_virtual, dim=1), method.virtual, atol=1e-4)
    # The frozen copy is the orthogonal initialisation: its rows are orthonormal.
    frozen = method.model.frozen_virtual
    torch.testing.assert_close(frozen @ frozen.T, torch.eye(n - b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "convnet4-small", "resnet12"])
def test_backbone_cut_in_two_gives_the_same_features(name):
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    x = torch.randn(2, 3, 32, 32)
    halves = split_backbone(backbone)
    torch.testing.assert_close(halves.back(halves.front(x)), backbone(x))
    if name == "convnet4-small":
        assert halves.front(x).shape == (2, 32, 8, 8)  # after the second max-pool
    if name == "resnet20":
        assert halves.front(x).shape == (2, 32, 16, 16)  # after layer2


# --- joint-balanced and the imbalance toolkit ----------------------------------------------------


def test_joint_balanced_is_an_oracle_that_restarts_every_session_with_cmo_in_the_late_epochs(
        tiny_runs, shared_options, monkeypatch):
    bench = tiny_runs["bench"]
    result, method = tiny_runs["get"](JointBalanced)
    record = build_record(RunKey(bench.id, "joint-balanced", "tiny", 0), bench, JointBalanced, "test", result, "now",
                          "cpu", None)
    assert record["method"]["oracle"] is True and "oracle" in record["memory"]["notes"]
    import fscil_bench.baselines.joint_balanced as module

    calls = []
    real = module.paste_minority
    monkeypatch.setattr(module, "paste_minority", lambda *a, **k: calls.append(1) or real(*a, **k))
    instances: list = []
    # 5 epochs with CMO from epoch 4 (strictly after 3): one epoch of CMO batches per session.
    run = run_method(bench, watched(JointBalanced, instances, cmo_prob=1.0), "tiny", 0, shared_options)
    assert run.status == "completed", run.error and run.error["traceback"]
    union = [8 * bench.schedule.num_base_classes + sum(len(s.train_indices) for s in bench.schedule.sessions[1:t + 1])
             for t in range(1, len(bench.schedule))]
    assert len(calls) == sum(n // 16 if n > 16 else 1 for n in union)


def test_balanced_softmax_adds_the_log_prior():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    counts = torch.tensor([500, 5, 5])
    prior = log_prior(counts)
    torch.testing.assert_close(prior, torch.log(torch.tensor([500 / 510, 5 / 510, 5 / 510])))
    expected = -torch.log_softmax(logits + prior, 1)[0, 1]
    torch.testing.assert_close(balanced_softmax_loss(logits, torch.tensor([1]), prior)[0], expected)


def test_minority_draw_makes_classes_uniform_and_cutmix_weights_by_area():
    labels = torch.cat([torch.zeros(100, dtype=torch.long), torch.ones(5, dtype=torch.long)])
    g = torch.Generator().manual_seed(0)
    drawn = labels[minority_draw(labels, 20000, g)]
    assert abs(float((drawn == 1).float().mean()) - 0.5) < 0.02  # 5 of 105 samples, half of the draws
    images, partners = torch.zeros(4, 3, 8, 8), torch.ones(4, 3, 8, 8)
    mixed, targets = paste_minority(images, torch.zeros(4, dtype=torch.long), partners, torch.ones(4, dtype=torch.long),
                                    1.0, np.random.default_rng(0), g)
    pasted = float(mixed[0, 0].mean())  # the share of the image taken from the partner
    assert targets.lam == pytest.approx(1 - pasted) and torch.equal(mixed[0], mixed[3])
    both = targets.involves(torch.tensor([1]))
    assert both.all() and not MixedTargets(torch.zeros(4, dtype=torch.long)).involves(torch.tensor([1])).any()


def test_imbalanced_sam_step_known_answer_on_a_quadratic():
    # Per-sample losses 0.5 |w - a|^2 (a head sample) and 0.5 |w - c|^2 (a tail sample), batch of 2:
    # g_h = (w - a) / 2; the tail part |w - c|^2 / 2 is re-evaluated at w + rho (w - c) / |w - c|.
    w0, a, c, rho = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), torch.tensor([4.0, 6.0]), 0.5
    w = torch.nn.Parameter(w0.clone())
    optimizer = torch.optim.SGD([w], lr=1.0)
    losses = lambda: torch.stack([0.5 * (w - a).pow(2).sum(), 0.5 * (w - c).pow(2).sum()])  # noqa: E731
    imbalanced_sam_step([w], optimizer, losses, torch.tensor([False, True]), rho)
    eps = rho * (w0 - c) / (w0 - c).norm()
    expected = w0 - ((w0 - a) / 2 + (w0 + eps - c))
    torch.testing.assert_close(w.detach(), expected)
    # With no tail sample both samples are head: a plain gradient step on their mean loss.
    w.data.copy_(w0)
    imbalanced_sam_step([w], optimizer, losses, torch.tensor([False, False]), rho)
    torch.testing.assert_close(w.detach(), w0 - ((w0 - a) + (w0 - c)) / 2)
