"""ALICE, SAVC and S3C: the methods whose base training is their contribution, and the toolkit
pieces they share (fixed transforms, multi-crops, the supervised contrastive queue)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import make_synthetic_benchmark
from fscil_bench.baselines.alice import (
    Alice,
    balanced_selection,
    cosface_loss,
    fuse,
    head_size,
    pair_class,
)
from fscil_bench.baselines.s3c import S3C, SingleTokenAttention, StochasticCosineClassifier
from fscil_bench.baselines.savc import SAVC, small_crop_key_rows
from fscil_bench.data.augment import ColorJitter, RandomApply
from fscil_bench.data.transforms import Normalization
from fscil_bench.data.views import ALICE_NORM, SAVC_CIFAR_NORM, ViewInputs, build_view
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import RunOptions, run_method
from fscil_bench.toolkit.contrastive import LabelledQueue, momentum_update, sup_contrastive_loss
from fscil_bench.toolkit.fixed_transforms import transform_set
from fscil_bench.toolkit.multicrop import WithCrops, constrained_crop_boxes, overlap

METHODS = [Alice, SAVC, S3C]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> dict:
    """Each method's smoke run on the synthetic benchmark, with the method instance it ended with."""
    # in this process: the watched classes are made here and cannot be imported by a worker
    options = RunOptions(cache_dir=tmp_path_factory.mktemp("cache"), log=lambda msg: None, isolation="none")
    bench = make_synthetic_benchmark()
    cache: dict = {}

    def get(method_cls: type):
        if method_cls not in cache:
            instances: list = []
            watched = type(f"Watched{method_cls.__name__}", (method_cls,), {"__init__": lambda self: instances.append(self)})
            cache[method_cls] = (run_method(bench, watched, "smoke", 0, options), instances[-1])
        return cache[method_cls]

    return {"bench": bench, "get": get}


# --- every method, through the runner -----------------------------------------------------------


@pytest.mark.parametrize("method_cls", METHODS, ids=lambda c: c.name)
def test_completes_every_session_and_declares_the_vectors_it_keeps(method_cls, smoke_runs):
    bench = smoke_runs["bench"]
    result, method = smoke_runs["get"](method_cls)
    assert result.status == "completed", result.error and result.error["traceback"]
    assert len(result.metrics["session_acc"]) == len(bench.schedule)
    kept = {Alice: lambda m: m.prototypes, SAVC: lambda m: m.rows, S3C: lambda m: m.prototypes}[method_cls](method)
    per_class = 2 if method_cls is SAVC else 1  # SAVC keeps one mean per (class, fantasy): rotation2
    assert len(kept) == per_class * bench.schedule.num_classes
    assert result.memory["feature_vectors"] == len(kept)
    assert result.memory["bytes"] == kept.numel() * 4 and result.memory["exemplars"] == 0
    assert result.extra["base_model"]["cache_hit"] is False  # each trains its own base model


@pytest.mark.parametrize("method_cls", METHODS, ids=lambda c: c.name)
def test_registered_with_presets_for_every_family(method_cls):
    assert discover().get(method_cls.name) is method_cls
    for preset, family in itertools.product(("quick", "paper", "smoke"), ("glyphs100", "cifar100", "mini_imagenet", "cub200")):
        assert dataclasses.is_dataclass(method_cls.resolve_preset(preset, family))
    assert method_cls.resolve_preset("paper", "cub200").pretrained == "torchvision-resnet18-imagenet1k-v1"
    assert method_cls.resolve_preset("quick", "glyphs100").backbone == "convnet4-small"


# --- ALICE ----------------------------------------------------------------------------------------


def test_alice_pair_classes_fill_the_columns_after_the_base_classes_one_to_one():
    a, b = torch.tensor([0, 1, 0, 1, 58]), torch.tensor([1, 0, 59, 2, 59])
    assert pair_class(a, b, 60).tolist() == [60, 60, 118, 119, 60 + 1770 - 1]
    pairs = torch.tensor(list(itertools.combinations(range(60), 2)))
    assert sorted(pair_class(pairs[:, 0], pairs[:, 1], 60).tolist()) == list(range(60, 60 + 1770))
    assert head_size(100, 60, 9, fusion=True) == 1950 and head_size(200, 100, 11, fusion=False) == 200


def test_alice_fusion_mixes_both_views_with_one_lambda_per_pair():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 2, 5])
    v1 = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    v2 = 10 * v1 + 1
    (f1, f2), out = fuse([v1, v2], labels, rounds=4, alpha=20.0, num_base=6, generator=g)
    assert torch.equal(out[:5], labels) and torch.equal(f1[:5], v1) and len(out) == len(f1) == len(f2) > 5
    for row in range(5, len(out)):
        # view 1's pixel is lam i + (1 - lam) j; view 2's is 10 (lam i + (1 - lam) j) + 1: the same lam
        assert torch.allclose(f2[row], 10 * f1[row] + 1, atol=1e-5)
        pair = [(i, j) for i in range(5) for j in range(5) if labels[i] != labels[j]
                and int(pair_class(labels[i:i + 1], labels[j:j + 1], 6)) == out[row]]
        assert pair, f"row {row} has a label no pair of different classes gives"
        lam = [(f1[row, 0, 0, 0] - j) / (i - j) for i, j in pair if i != j]
        assert any(0.4 - 1e-5 <= float(x) <= 0.6 + 1e-5 for x in lam)


def test_alice_cosface_is_the_official_angular_penalty():
    g = torch.Generator().manual_seed(1)
    cos = torch.rand(4, 7, generator=g) * 2 - 1
    y = torch.tensor([0, 3, 6, 2])
    s, m = 30.0, 0.4
    num = s * (cos[torch.arange(4), y] - m)
    others = torch.stack([torch.cat([cos[i, :y[i]], cos[i, y[i] + 1:]]) for i in range(4)])
    expected = -(num - torch.log(torch.exp(num) + torch.exp(s * others).sum(1))).mean()
    assert torch.allclose(cosface_loss(cos, y, s, m), expected, atol=1e-4)


def test_alice_balanced_selection_replaces_the_first_farther_kept_image():
    # Unit vectors at these angles from the x axis; their mean lies at about 0.058 rad, so the cosine
    # distances grow with |angle - 0.058|: 0.842, 0.958, 0.442, 0.558, 0.042, 0.242, 0.108 (in angle terms).
    angles = torch.tensor([0.9, -0.9, 0.5, -0.5, 0.1, 0.3, -0.05])
    feats = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    # k = 2 keeps [0, 1]; 0.5 replaces slot 0 (0.9); -0.5 replaces slot 1 (-0.9); 0.1 replaces slot 0 (0.5);
    # 0.3 is not closer than 0.1 but is than -0.5 (slot 1); -0.05 is not closer than 0.1 but is than 0.3.
    assert balanced_selection(feats, 2).tolist() == [4, 6]
    assert balanced_selection(feats, 10).tolist() == list(range(7))  # fewer images than k: all of them


def test_alice_views_follow_the_official_transforms():
    cifar = ViewInputs("cifar100", Normalization((0, 0, 0), (1, 1, 1)))
    train, test = build_view("alice-cifar-train", cifar), build_view("alice-cifar-test", cifar)
    assert train.norm == ALICE_NORM == test.norm
    assert [type(s).__name__ for s in train.steps] == ["RandomResizedCrop", "HorizontalFlip", "RandomApply", "RandomGrayscale"]
    assert train.steps[0].scale == (0.2, 1.0) and train.steps[2].p == 0.8 and train.steps[2].operation.hue == 0.1
    out = test(torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8))
    assert out.shape == (2, 3, 32, 32)
    glyphs = ViewInputs("glyphs100", Normalization((0.5,) * 3, (0.3,) * 3), flip=False)
    assert "HorizontalFlip" not in [type(s).__name__ for s in build_view("alice-cifar-train", glyphs).steps]


def test_random_apply_decides_per_image():
    x = torch.rand(64, 3, 4, 4)
    dim = lambda img, gen: img * 0.5  # noqa: E731
    assert torch.equal(RandomApply(dim, 0.0)(x, torch.Generator()), x)
    assert torch.equal(RandomApply(dim, 1.0)(x, torch.Generator()), x * 0.5)
    out = RandomApply(dim, 0.5)(x, torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 54 and torch.equal(out[changed], x[changed] * 0.5)
    assert RandomApply(ColorJitter(brightness=0.4), 0.8)(x, torch.Generator()).shape == x.shape


# --- S3C ------------------------------------------------------------------------------------------


def test_s3c_aggregates_each_rotation_against_its_own_rows():
    rot = transform_set("rotation4")
    g = torch.Generator().manual_seed(0)
    feats, mu = torch.randn(5, 4 * 6, generator=g), torch.randn(4 * 3, 6, generator=g)
    # Known answer from the joint logits of every rotated copy against every row.
    joint = 16 * F.normalize(feats.view(20, 6), dim=1) @ F.normalize(mu, dim=1).T  # rows (image, rotation)
    expected = rot.aggregate(joint, 3)
    manual = torch.stack([torch.stack([sum(joint[4 * i + k, 4 * c + k] for k in range(4)) / 4 for c in range(3)])
                          for i in range(5)])
    assert torch.allclose(expected, manual, atol=1e-5)
    assert torch.allclose(rot.aggregated_cosine(feats, mu, 3, 16.0), expected, atol=1e-5)
    # A feature whose rotation-k block is row 4c + k of class c scores 16 for c.
    feats = mu.view(3, 4 * 6)[[2]]
    assert rot.aggregated_cosine(feats, mu, 3, 16.0).argmax().item() == 2
    assert rot.aggregated_cosine(feats, mu, 3, 16.0)[0, 2].item() == pytest.approx(16.0, abs=1e-4)


def test_s3c_rotations_and_joint_labels_follow_the_official_layout():
    rot = transform_set("rotation4")
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = rot.expand(x)
    for i, k in itertools.product(range(2), range(4)):
        assert torch.equal(out[4 * i + k], torch.rot90(x[i:i + 1], k, (2, 3))[0])
    assert rot.joint_labels(torch.tensor([3, 7])).tolist() == [12, 13, 14, 15, 28, 29, 30, 31]


def test_s3c_stochastic_classifier_and_attention_block():
    clf = StochasticCosineClassifier(dim=5, rows=8, scale=16.0, offset=4.0)
    x = torch.randn(3, 5)
    assert torch.allclose(clf(x), 16 * F.normalize(x, dim=1) @ F.normalize(clf.mu, dim=1).T, atol=1e-5)
    eps = torch.ones(8, 5)
    w = clf.mu + F.softplus(torch.tensor(-4.0)) * eps  # sigma starts at 0: std softplus(-4) = 0.0181
    assert torch.allclose(clf(x, eps), 16 * F.normalize(x, dim=1) @ F.normalize(w, dim=1).T, atol=1e-5)
    block = SingleTokenAttention(5).eval()
    assert torch.allclose(block(x), block.norm(x + block.out(block.value(x))), atol=1e-6)
    # training mode: the dropout masks come from the generator passed in, whatever the global state
    block.train()
    torch.manual_seed(1)
    first = block(x, torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    assert torch.equal(first, block(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, block(x, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="generator"):
        block(x)


# --- SAVC -----------------------------------------------------------------------------------------


def test_savc_fantasies_follow_the_official_order_and_aggregate_their_own_rows():
    perm = transform_set("rot_color_perm12")
    assert perm.size == 12
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    out = perm.expand(x)
    for i, k, c in itertools.product(range(2), range(4), range(3)):
        order = [(0, 1, 2), (1, 2, 0), (2, 0, 1)][c]  # output RGB = input (R,G,B), (G,B,R), (B,R,G)
        assert torch.equal(out[12 * i + 3 * k + c], torch.rot90(x[i:i + 1], k, (2, 3))[0, list(order)])
    two = transform_set("rotation2")
    logits = torch.arange(4 * 6, dtype=torch.float32).view(4, 6)  # 2 images x 2 fantasies, 3 classes x 2
    assert two.aggregate(logits, 3).tolist() == [[(0 + 7) / 2, (2 + 9) / 2, (4 + 11) / 2],
                                                 [(12 + 19) / 2, (14 + 21) / 2, (16 + 23) / 2]]


def test_savc_small_crops_meet_the_key_of_their_own_fantasy():
    # rows ((image, crop), fantasy) for 2 images, 2 crops, 2 fantasies; keys (image, fantasy)
    assert small_crop_key_rows(2, 2, 2).tolist() == [0, 1, 0, 1, 2, 3, 2, 3]
    assert small_crop_key_rows(1, 4, 1).tolist() == [0, 0, 0, 0]


def test_savc_views_carry_the_crops_and_savcs_cifar_normalisation():
    hp = SAVC.resolve_preset("paper", "cifar100")
    views = SAVC.views(hp, ViewInputs("cifar100", Normalization((0, 0, 0), (1, 1, 1))))
    assert isinstance(views.train, WithCrops) and views.train.view.norm == SAVC_CIFAR_NORM == views.test.norm
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    query, key, small = views.train.crops(images, torch.Generator().manual_seed(0))
    assert query.shape == key.shape == (3, 3, 32, 32) and small.shape == (3, 4, 3, 18, 18)
    assert views.train(images, torch.Generator()).shape == (3, 3, 32, 32)


def test_constrained_small_crops_overlap_the_key_or_fall_back_to_a_free_crop():
    g = torch.Generator().manual_seed(0)
    whole = tuple(torch.tensor([v] * 50) for v in (0, 0, 32, 32))
    boxes = constrained_crop_boxes(50, 32, 32, (0.2, 0.7), (3 / 4, 4 / 3), whole, 0.1, g)
    assert (overlap(boxes, whole) == boxes[2] * boxes[3]).all()  # inside the whole image: full overlap
    corner = tuple(torch.tensor([v] * 200) for v in (0, 0, 8, 8))
    boxes = constrained_crop_boxes(200, 32, 32, (0.2, 0.3), (3 / 4, 4 / 3), corner, 0.1, g)
    top, left, h, w = boxes
    assert ((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32)).all()
    near = overlap(boxes, corner) >= 0.1 * 0.2 * 32 * 32
    assert near.float().mean() > 0.5  # most draws find an overlapping candidate within ten tries
    impossible = constrained_crop_boxes(200, 32, 32, (0.2, 0.3), (3 / 4, 4 / 3), corner, 2.0, g)
    assert ((impossible[2] > 0) & (impossible[0] + impossible[2] <= 32)).all()  # all fell back to free crops


def test_supervised_contrastive_loss_matches_the_official_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 9, generator=g) * 3
    positives = torch.rand(6, 9, generator=g) < 0.3
    positives[:, 0] = True
    y = positives.float()
    sum_neg = ((1 - y) * torch.exp(logits)).sum(1, keepdim=True)  # losses.py:15-25
    expected = (torch.log(1 + sum_neg * y * torch.exp(-logits)).sum(1) / y.sum(1)).mean()
    assert torch.allclose(sup_contrastive_loss(logits, positives), expected, atol=1e-5)


def test_label_queue_wraps_around_and_never_counts_empty_slots():
    queue = LabelledQueue(dim=2, size=4)
    assert not queue.positives(torch.tensor([-1, 0])).any()
    queue.push(torch.eye(2).repeat(3, 1), torch.tensor([5, 6, 7, 8, 9, 5]))
    assert queue.labels.tolist() == [9, 5, 7, 8] and int(queue.pointer) == 2
    assert queue.positives(torch.tensor([5])).tolist() == [[False, True, False, False]]
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    momentum_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * before + 0.1 * b.weight)


@pytest.mark.slow
def test_smoke_presets_run_all_sessions_of_glyphs100_tiny(tmp_path):
    import json

    from fscil_bench.cli import main

    runs = tmp_path / "runs"
    code = main(["run", "--benchmark", "glyphs100-tiny", "--methods", "alice,savc,s3c", "--preset", "smoke",
                 "--output", str(runs), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    for name in ("alice", "savc", "s3c"):
        record = json.loads((runs / "glyphs100-tiny@1" / name / "smoke" / "seed-0" / "record.json").read_text())
        assert len(record["metrics"]["session_acc"]) == 9, name
