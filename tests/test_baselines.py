"""The general baselines (joint, iCaRL, Avalanche strategies) and the learn2learn episode sampler."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_synthetic_benchmark
from fscil_bench.baselines.avalanche_methods import (
    AvalancheEWC,
    AvalancheLwF,
    AvalancheNaive,
    AvalancheReplay,
)
from fscil_bench.baselines.icarl import ICaRL, herding_selection
from fscil_bench.baselines.joint import Joint

from fscil_bench.results.store import RunKey
from fscil_bench.run.grid import build_record
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import RunOptions, run_method

#: The methods tested here (each with its ``smoke`` preset, seconds on the 16 px synthetic benchmark).
METHODS = [Joint, ICaRL, AvalancheNaive, AvalancheLwF, AvalancheEWC, AvalancheReplay]


def tiny(method_cls: type, **overrides) -> type:
    """``method_cls`` with a ``tiny`` preset: its ``smoke`` settings with ``overrides`` applied."""
    hp = dataclasses.replace(method_cls.resolve_preset("smoke", "synthetic"), **overrides)
    return type(f"Tiny{method_cls.__name__}", (method_cls,), {"presets": {**method_cls.presets, "tiny": hp}})


def run_tiny(method_cls: type, bench, options, **overrides):
    return run_method(bench, tiny(method_cls, **overrides), "tiny", 0, options)


@pytest.fixture(scope="module")
def shared_options(tmp_path_factory) -> RunOptions:
    """One cache for the module: every tiny preset shares one cached base model."""
    return RunOptions(cache_dir=tmp_path_factory.mktemp("cache"), log=lambda msg: None, isolation="none")


@pytest.fixture(scope="module")
def tiny_runs(shared_options) -> dict:
    """Each method's tiny run on the synthetic benchmark, computed once when first asked for."""
    bench = make_synthetic_benchmark()
    cache: dict = {}

    def get(method_cls: type):
        if method_cls not in cache:
            cache[method_cls] = run_tiny(method_cls, bench, shared_options)
        return cache[method_cls]

    return {"bench": bench, "get": get}


# --- every method, through the runner -----------------------------------------------------------


@pytest.mark.parametrize("method_cls", METHODS, ids=lambda c: c.name)
def test_each_baseline_completes_a_tiny_schedule(method_cls, tiny_runs):
    synthetic_benchmark = tiny_runs["bench"]
    result = tiny_runs["get"](method_cls)
    assert result.status == "completed", result.error and result.error["traceback"]
    assert result.sessions_done == len(synthetic_benchmark.schedule)
    assert len(result.metrics["session_acc"]) == len(synthetic_benchmark.schedule)
    assert result.memory["declared"]


def test_new_baselines_are_registered_with_quick_and_paper_presets():
    registry = discover()
    for cls in METHODS:
        assert registry.get(cls.name) is cls
        assert {"quick", "paper"} <= set(cls.presets)
        assert cls.paper
        for preset in ("quick", "paper"):
            for family in ("glyphs100", "cifar100", "mini_imagenet", "cub200"):
                assert dataclasses.is_dataclass(cls.resolve_preset(preset, family))


def test_quick_presets_share_the_cached_cross_entropy_base_model():
    from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD

    for cls in METHODS:
        hp = cls.resolve_preset("quick", "glyphs100")
        assert (hp.backbone, hp.base) == (QUICK_BACKBONE, QUICK_BASE_SGD), cls.name
    assert ICaRL.resolve_preset("quick", "glyphs100").base_loss == "cross-entropy"
    for cls in (AvalancheNaive, AvalancheLwF, AvalancheEWC, AvalancheReplay):
        assert cls.resolve_preset("quick", "glyphs100").init_from_base_model


# --- joint: the oracle -------------------------------------------------------------------------


def test_joint_record_marks_it_oracle_and_it_declares_every_past_training_image(tiny_runs):
    bench = tiny_runs["bench"]
    result = tiny_runs["get"](Joint)
    assert result.status == "completed"
    record = build_record(RunKey(bench.id, "joint", "tiny", 0), bench, Joint, "test", result, "now", "cpu", None)
    assert record["method"]["oracle"] is True
    kept = sum(len(s.train_indices) for s in bench.schedule.sessions)
    assert record["memory"]["exemplars"] == kept
    assert record["memory"]["bytes"] >= kept * int(np.prod(bench.train.images.shape[1:]))
    assert "all past training data" in record["memory"]["notes"]
    # The protocol's other methods are not oracles.
    assert not ICaRL.oracle and not AvalancheReplay.oracle


def test_joint_fine_tunes_the_network_on_the_union_class_balanced(synthetic_benchmark, shared_options, monkeypatch):
    import fscil_bench.baselines.joint as joint_module

    seen = []
    real = joint_module.train_supervised

    def spy(model, data, *args, **kwargs):
        seen.append(data.labels.clone())
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(joint_module, "train_supervised", spy)
    result = run_tiny(Joint, synthetic_benchmark, shared_options, train_backbone=True, samples_per_epoch=60)
    assert result.status == "completed"
    assert len(seen) == len(synthetic_benchmark.schedule) - 1
    for t, labels in enumerate(seen, start=1):
        counts = torch.bincount(labels, minlength=synthetic_benchmark.schedule.num_seen(t))
        assert len(counts) == synthetic_benchmark.schedule.num_seen(t)  # old and new classes alike
        assert counts.max() - counts.min() <= 1


# --- iCaRL ---------------------------------------------------------------------------------------


def test_herding_picks_the_sample_closest_to_the_mean_first():
    # Vectors of one norm at angles (radians) around 0: their mean lies close to angle 0, and the
    # sample at 0.05 rad (index 1) is the closest to it, ahead of the one at -0.1 rad.
    angles = torch.tensor([0.9, 0.05, -0.6, 0.5, -0.8, -0.1])
    feats = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(6)], dim=1) * 3.0
    picks = herding_selection(feats, 6)
    assert picks[0].item() == 1
    assert sorted(picks.tolist()) == list(range(6))  # every sample once, no repeats
    # Known answer by brute force: the k-th pick minimises the distance of the running mean to mu.
    f = torch.nn.functional.normalize(feats, dim=1)
    mu, chosen = f.mean(0), []
    for k in range(1, 7):
        rest = [i for i in range(6) if i not in chosen]
        chosen.append(min(rest, key=lambda i: float((mu - (f[chosen].sum(0) + f[i]) / k).norm())))
    assert picks.tolist() == chosen
    assert herding_selection(feats, 2).tolist() == chosen[:2]
    assert herding_selection(feats, 10).tolist() == chosen  # never more than there are


def test_herding_first_pick_is_closest_to_the_mean_in_high_dimension():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=1)
    mu = feats.mean(0)
    assert herding_selection(feats, 1).item() == int((feats - mu).norm(dim=1).argmin())


@pytest.mark.parametrize("budget", [2, 5, 20])
def test_icarl_declares_min_budget_available_exemplars_per_seen_class(budget, tiny_runs, shared_options):
    # 12 training images per base class, 3 shots per novel class: 2 is below both, 5 between, 20 above both.
    bench = tiny_runs["bench"]
    if budget == ICaRL.resolve_preset("smoke", "synthetic").memory_per_class:
        result = tiny_runs["get"](ICaRL)
    else:
        result = run_tiny(ICaRL, bench, shared_options, memory_per_class=budget)
    assert result.status == "completed", result.error and result.error["traceback"]
    per_class = np.bincount(bench.train.labels)
    assert per_class[0] == 12 and bench.schedule.sessions[1].shots == 3
    expected = sum(min(budget, per_class[c] if s.shots is None else s.shots)
                   for s in bench.schedule.sessions for c in s.classes)
    assert result.memory["exemplars"] == expected
    assert result.memory["feature_vectors"] == bench.schedule.num_classes
    assert result.memory["bytes"] >= expected * int(np.prod(bench.train.images.shape[1:]))


def test_icarl_logit_distillation_and_mirrored_means_run(tiny_runs, shared_options):
    result = run_tiny(ICaRL, tiny_runs["bench"], shared_options, distillation="kd", flip_means=True)
    assert result.status == "completed", result.error and result.error["traceback"]


# --- learn2learn episodes (CEC's pseudo-incremental tasks) ----------------------------------------


def test_episode_sampler_draws_reproducible_disjoint_n_way_tasks():
    from fscil_bench.integrations.learn2learn_tasks import EpisodeSampler

    labels = torch.arange(10).repeat_interleave(8)
    a = EpisodeSampler(labels, ways=4, shots=3, queries=2, seed=1)
    b = EpisodeSampler(labels, ways=4, shots=3, queries=2, seed=1)
    for _ in range(3):
        ea, eb = a.sample(), b.sample()
        assert torch.equal(ea.support, eb.support) and torch.equal(ea.query, eb.query)
        assert ea.support.shape == (4, 3) and ea.query.shape == (4, 2) and len(set(ea.classes.tolist())) == 4
        for i, c in enumerate(ea.classes.tolist()):
            idx = torch.cat([ea.support[i], ea.query[i]])
            assert (labels[idx] == c).all() and len(set(idx.tolist())) == 5
    import random

    state = random.getstate()
    a.sample()
    assert random.getstate() == state  # the sampler never disturbs the global random state


# --- Avalanche strategies ------------------------------------------------------------------------


def test_avalanche_replay_declares_its_buffer_and_ewc_lwf_their_state(tiny_runs):
    synthetic_benchmark = tiny_runs["bench"]
    replay = tiny_runs["get"](AvalancheReplay)
    assert 0 < replay.memory["exemplars"] <= 20
    assert "replay buffer" in replay.memory["notes"]
    lwf = tiny_runs["get"](AvalancheLwF)
    assert lwf.memory["exemplars"] == 0 and "teacher" in lwf.memory["notes"]
    assert lwf.extra["avalanche"]["strategy"] == "LwF"
    assert lwf.extra["avalanche"]["base_experience_samples"] == 4 * synthetic_benchmark.schedule.num_base_classes
    ewc = tiny_runs["get"](AvalancheEWC)
    assert ewc.memory["exemplars"] == 0 and "EWC importances" in ewc.memory["notes"] and ewc.memory["bytes"] > 0


def test_avalanche_method_can_train_the_base_experience_itself(synthetic_benchmark, shared_options):
    result = run_tiny(AvalancheNaive, synthetic_benchmark, shared_options, init_from_base_model=False, base_epochs=1,
                      base_samples_per_class=None)
    assert result.status == "completed", result.error and result.error["traceback"]
    assert "base_model" not in result.extra  # no cached base model was used
