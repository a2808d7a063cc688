"""Every ``paper`` recipe, shortened to a few steps, through its real code paths on the CPU.

The recipes keep every value but their lengths (epochs, steps, episodes): the published
backbones, views, batch Mixup/CutMix with NC-FSCIL's loss rule, mmcv's schedules, feature mixup,
``copy_list``, frozen stages and pretrained weights (a generated torchvision state dict). The
default suite runs them on a small 32 px synthetic benchmark (the two ETF ablations, which share
``etf``'s code, on the small CPU backbone; the CUB recipes through CIFAR-sized views, so
ResNet-18 runs at 32 px); ``-m slow`` runs every recipe as it is on glyphs100-tiny (20 training
and 10 test images per class, so that every recipe fits CI's time), a few training steps per
loader epoch and every evaluation whole. The frozen ViT-B/16 recipes need weights that cannot be
fetched offline and are skipped in both.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from conftest import make_synthetic_benchmark
from fscil_bench.benchmarks.benchmark import LoadOptions
from fscil_bench.benchmarks.registry import get_benchmark
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.data.mixing import BatchMix
from fscil_bench.reporting.report import write_reports
from fscil_bench.results.store import ResultsStore, RunKey
from fscil_bench.run.grid import build_record
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import RunOptions, run_method
from fscil_bench.toolkit import neck_learner, own_base
from fscil_bench.toolkit.neck_learner import NeckLearner
from fscil_bench.toolkit.training import SGDRecipe, StepRecipe

REGISTRY = discover()


def _short(value, name: str = ""):
    """A recipe value with its lengths cut to a few steps (everything else kept)."""
    if isinstance(value, SGDRecipe):  # one pass (the repeated loader epoch has its own test below)
        return dataclasses.replace(value, epochs=1, repeat=1)
    if isinstance(value, StepRecipe):
        return dataclasses.replace(value, steps=min(value.steps, 6))
    return value


def shortened(hparams):
    """``hparams`` with every recipe cut to one loader epoch / a few steps."""
    changes = {f.name: _short(getattr(hparams, f.name), f.name) for f in dataclasses.fields(hparams)}
    for name, few in (("session_steps", 6), ("episodes", 4), ("epochs", 1)):
        value = getattr(hparams, name, None)
        if value is not None:  # session_steps: one count for every session, or one per session
            changes[name] = tuple(few for _ in value) if isinstance(value, tuple) else few
    if getattr(hparams, "adapter_sgd", None) is not None:
        changes["adapter_sgd"] = dataclasses.replace(hparams.adapter_sgd, steps=4, milestones=(2,))
    return dataclasses.replace(hparams, **changes)


def paper_short(method: str, family: str, **overrides) -> type:
    """The method with a preset ``short``: its ``paper`` preset of ``family``, shortened."""
    cls = REGISTRY.get(method)
    hp = dataclasses.replace(shortened(cls.resolve_preset("paper", family)), **overrides)
    return type(f"Short{cls.__name__}", (cls,), {"presets": {"short": hp}})


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> RunOptions:
    # in this process: the shortened classes are made here and cannot be imported by a worker
    return RunOptions(cache_dir=tmp_path_factory.mktemp("cache"), log=lambda msg: None, isolation="none")


@pytest.fixture(scope="module")
def bench():
    # CIFAR-sized, as the recipes' views expect; 6 training and 2 test images per class
    return make_synthetic_benchmark(size=32, train_per_class=6, test_per_class=2)


#: Methods whose default-suite smoke swaps the backbone for the CPU one (they share etf's code path).
LIGHT = {"etf-ce": {"backbone": "convnet4-small"}, "etf-linear-ce": {"backbone": "convnet4-small"}}
#: CIFAR-sized views for the CUB recipes' default-suite smoke (the 224 px views have their own tests).
SMALL_VIEWS = {"train_view": "cec-cifar-train", "test_view": "cec-cifar-test"}


@pytest.fixture
def spies(monkeypatch):
    """Counts of the batch mixes drawn, feature mixups applied and the incremental pools' sizes."""
    seen = {"mix": [], "feature_mixup": 0, "pools": []}
    mix_call = BatchMix.__call__

    def counting_mix(self, images, labels, generator):
        batch = mix_call(self, images, labels, generator)
        seen["mix"].append(batch.kind)
        return batch

    permutation = neck_learner.grouped_permutation

    def counting_permutation(*args):
        seen["feature_mixup"] += 1
        return permutation(*args)

    old_pool = NeckLearner.old_pool

    def recording_pool(self, session, ctx):
        means, labels = old_pool(self, session, ctx)
        seen["pools"].append((session.index, labels.tolist()))
        return means, labels

    monkeypatch.setattr(BatchMix, "__call__", counting_mix)
    monkeypatch.setattr(neck_learner, "grouped_permutation", counting_permutation)
    monkeypatch.setattr(NeckLearner, "old_pool", recording_pool)
    return seen


#: Recipes whose default-suite smoke would cost many seconds on two cores: ``-m slow`` runs them
#: here, and every recipe on glyphs100-tiny.
HEAVY = {"icarl", "joint", "avalanche-naive", "avalanche-lwf", "avalanche-ewc", "avalanche-replay"}


#: Recipes of frozen ViT-B/16 features: no such network runs offline on two cores. Their values are
#: held by tests/test_recipes.py; their code runs on tiny timm and open_clip networks in
#: tests/test_pretrained.py.
FROZEN_VIT = {"simplecil", "fecam", "ranpac"}


def _param(method: str):
    if method in FROZEN_VIT:
        return pytest.param(method, marks=pytest.mark.skip(reason="needs ViT-B/16 weights: see tests/test_pretrained.py"))
    return pytest.param(method, marks=pytest.mark.slow) if method in HEAVY else method


@pytest.mark.parametrize("method", [_param(m) for m in REGISTRY.names()])
def test_every_paper_recipe_runs_a_few_steps(method, bench, options, spies):
    """The recipe glyphs100 and any other family take (CIFAR-100's), shortened, completes."""
    cls = paper_short(method, "cifar100", **LIGHT.get(method, {}))
    result = run_method(bench, cls, "short", 0, options)
    assert result.status == "completed", result.error and result.error["traceback"]
    hp = cls.presets["short"]
    assert result.config["views"] == {"train": hp.train_view, "test": hp.test_view}
    if method == "etf":  # NC-FSCIL's CIFAR recipe: batch mixing in the base session, feature mixup after
        assert spies["mix"] and set(spies["mix"]) <= {"mixup", "cutmix", "identity"}
        assert spies["feature_mixup"] > 0


def test_a_repeated_loader_epoch_walks_every_sample_repeat_times(bench):
    from fscil_bench.run.runner import make_session

    data = make_session(bench, 0).train
    batches = list(data.batches(5, augment=False, shuffle=True, generator=torch.Generator().manual_seed(0), repeat=3))
    labels = torch.cat([y for _, y in batches])
    assert len(batches) == data.num_batches(5, repeat=3) == -(-3 * len(data) // 5)
    assert torch.equal(torch.bincount(labels), 3 * torch.bincount(data.labels))
    assert not torch.equal(labels[: len(data)], labels[len(data) : 2 * len(data)])  # one order over all copies


def test_nc_fscils_mini_recipe_repeats_old_novel_means_as_copy_list_says(bench, options, spies):
    # CIFAR-sized views and the CPU backbone: this test is about the incremental stage's pool
    result = run_method(bench, paper_short("etf", "mini_imagenet", backbone="convnet4-small",
                                           train_view="nc-cifar-train", test_view="nc-cifar-test"), "short", 0, options)
    assert result.status == "completed", result.error and result.error["traceback"]
    base = list(range(bench.schedule.num_base_classes))
    pools = dict(spies["pools"])
    first, second = bench.schedule.class_groups()[1], bench.schedule.class_groups()[2]
    assert pools[1] == base  # session 1: no old novel class yet, every base mean once
    # session 2: copy_list[1] = 2 copies of each old novel mean, every base mean once
    novel = pools[2][len(base) :]
    assert pools[2][: len(base)] == base and sorted(novel) == sorted(list(range(*first)) * 2)
    assert second[0] not in pools[2]
    assert not spies["mix"] and spies["feature_mixup"] == 0  # mini: neither batch nor feature mixup


class Keep:
    """Mixin: keeps the instance that ran, so a test can look inside its model."""

    last = None

    def fit_base(self, session, ctx):
        type(self).last = self
        super().fit_base(session, ctx)


@pytest.fixture(scope="module")
def imagenet_like_weights(tmp_path_factory):
    """A torchvision ResNet-18 state dict (random weights, torchvision's format, with its fc)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-generated.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def test_nc_fscils_cub_recipe_loads_the_weights_and_keeps_the_stem_and_first_stage_frozen(bench, options,
                                                                                           imagenet_like_weights):
    base = paper_short("etf", "cub200", pretrained=str(imagenet_like_weights), **SMALL_VIEWS)
    cls = type("KeepETF", (Keep, base), {})
    result = run_method(bench, cls, "short", 0, options)
    assert result.status == "completed", result.error and result.error["traceback"]
    assert str(imagenet_like_weights) in result.extra["extra_data"]
    assert result.extra["base_model"]["recipe"]["frozen_stages"] == 1
    state = torch.load(imagenet_like_weights, weights_only=True)
    net = cls.last.model.backbone.net
    for name in ("conv1.weight", "bn1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.running_var"):
        assert torch.equal(net.state_dict()[name].cpu(), state[name]), name  # frozen: weights and statistics kept
    assert not torch.equal(net.state_dict()["layer2.0.conv1.weight"].cpu(), state["layer2.0.conv1.weight"])


def test_cecs_cub_recipe_trains_a_cosine_base_from_the_weights_and_reports_say_so(bench, options, tmp_path,
                                                                                  imagenet_like_weights, monkeypatch):
    cls = paper_short("prototype", "cub200", pretrained=str(imagenet_like_weights), **SMALL_VIEWS)
    result = run_method(bench, cls, "short", 0, options)
    assert result.status == "completed", result.error and result.error["traceback"]
    recipe = result.extra["base_model"]["recipe"]
    assert recipe["classifier"] == "cosine" and recipe["scale"] == 16.0 and "pretrained_sha256" in recipe
    assert result.extra["pretrained"]["file"] == str(imagenet_like_weights)
    # the leaderboard row of a pretrained run names its extra data
    monkeypatch.setattr("fscil_bench.reporting.report._figures", lambda *args: [])
    store = ResultsStore(tmp_path / "runs")
    key = RunKey(bench.id, "prototype", "short", 0)
    store.write(key, build_record(key, bench, cls, "test", result, "2025-01-01T00:00:00+00:00", "cpu", "test"),
                result.predictions, result.test_labels)
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / f"{bench.id.replace('@', '-v')}.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| prototype "))
    assert f"extra data: pretrained weights resnet18-generated: unknown (the file {imagenet_like_weights.resolve()})" in row


#: Training batches each loader epoch yields in the glyphs100 smoke: a few steps, not an epoch.
FEW_STEPS = 3


@pytest.fixture
def few_training_steps(monkeypatch):
    """Every training pass over a sample set (augmented and shuffled, or the raw batches of the
    methods that augment inside their loss) stops after :data:`FEW_STEPS` batches; evaluation and
    feature passes walk the whole set."""
    batches, raw_batches = LabelledImages.batches, own_base.raw_batches

    def first_few(self, batch_size, *, augment, shuffle=False, **kwargs):
        walk = batches(self, batch_size, augment=augment, shuffle=shuffle, **kwargs)
        return itertools.islice(walk, FEW_STEPS) if augment and shuffle else walk

    monkeypatch.setattr(LabelledImages, "batches", first_few)
    monkeypatch.setattr(own_base, "raw_batches", lambda *args, **kwargs: itertools.islice(raw_batches(*args, **kwargs),
                                                                                          FEW_STEPS))


@pytest.mark.slow
@pytest.mark.parametrize("method", [_param(m) for m in REGISTRY.names()])
def test_every_paper_recipe_on_glyphs100(method, tmp_path_factory, few_training_steps):
    """Every method's glyphs100 recipe (CIFAR-100's), a few steps of each loader epoch, on glyphs100-tiny."""
    cache = tmp_path_factory.getbasetemp() / "glyphs-cache"
    bench = get_benchmark("glyphs100-tiny").load(LoadOptions(cache_dir=cache, log=lambda m: None))
    cls = paper_short(method, "glyphs100")
    result = run_method(bench, cls, "short", 0, RunOptions(cache_dir=cache, log=lambda m: None, isolation="none"))
    assert result.status == "completed", result.error and result.error["traceback"]
    assert np.isfinite(result.metrics["avg"])
