"""Base-checkpoint selection: the last epoch, a seeded validation split, or the runner's test score (marked)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fscil_bench.baselines.prototype import Prototype
from fscil_bench.protocol import Context, uses_test_checkpoint, with_base_checkpoint
from fscil_bench.reporting.report import write_reports
from fscil_bench.results.store import ResultsStore, RunKey
from fscil_bench.run.grid import build_record
from fscil_bench.run.runner import NOT_PROTOCOL_CLEAN, base_test_scorer, run_method
from fscil_bench.toolkit.checkpoints import validation_split
from fscil_bench.toolkit.training import SGDRecipe, train_supervised


def test_the_validation_split_holds_out_a_fraction_of_every_class():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 1 + [3] * 2)
    train, val = validation_split(labels, 0.1, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([train, val]).tolist()) == list(range(len(labels)))
    counts = torch.bincount(labels[val], minlength=4).tolist()
    assert counts == [1, 2, 0, 1]  # round(0.1 n), at least one; never the only sample of a class
    again, _ = validation_split(labels, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(train, again)


def test_preset_names_choose_the_rule_and_only_best_on_test_is_flagged():
    smoke = Prototype.resolve_preset("smoke", "glyphs100")
    assert smoke.base.checkpoint == "last" and not uses_test_checkpoint(smoke)
    assert Prototype.resolve_preset("smoke+validation", "glyphs100").base.checkpoint == "validation"
    flagged = Prototype.resolve_preset("paper+best-on-test", "cifar100")
    assert flagged.base.checkpoint == "best-on-test" and uses_test_checkpoint(flagged)
    with pytest.raises(KeyError, match="no base recipe"):
        with_base_checkpoint({"base": 1}, "validation")


def _ctx(bench, cache) -> Context:
    return Context.create(bench.info(), None, 0, cache_dir=cache, log=lambda m: None)


def test_validation_keeps_the_best_scored_state(synthetic_benchmark, tmp_path):
    from fscil_bench.run.runner import make_session
    from fscil_bench.toolkit.heads import BackboneWithHead
    from fscil_bench.models import build_backbone

    session = make_session(synthetic_benchmark, 0)
    ctx = _ctx(synthetic_benchmark, tmp_path)
    torch.manual_seed(0)
    model = BackboneWithHead(build_backbone("convnet4-small"), session.num_seen)
    recipe = SGDRecipe(epochs=3, lr=0.05, batch_size=16, checkpoint="validation", checkpoint_every=2,
                       validation_fraction=0.25)
    train_supervised(model, session.train, torch.nn.functional.cross_entropy, recipe, ctx, desc="base", predict=model)
    note = ctx.extra["checkpoints"]["base"]
    assert note["rule"] == "validation" and [e for e, _ in note["scores"]] == [2, 3]  # every 2 epochs, and the last
    best = max(s for _, s in note["scores"])
    assert note["score"] == best and note["epoch"] == max(e for e, s in note["scores"] if s == best)
    with pytest.raises(ValueError, match="needs the method's predict"):
        train_supervised(model, session.train, torch.nn.functional.cross_entropy, recipe, ctx, desc="base")


def test_best_on_test_needs_the_runners_scorer(synthetic_benchmark, tmp_path):
    from fscil_bench.run.runner import make_session
    from fscil_bench.toolkit.heads import BackboneWithHead
    from fscil_bench.models import build_backbone

    session = make_session(synthetic_benchmark, 0)
    model = BackboneWithHead(build_backbone("convnet4-small"), session.num_seen)
    recipe = SGDRecipe(epochs=1, lr=0.05, batch_size=8, checkpoint="best-on-test")
    with pytest.raises(ValueError, match="needs the runner's test scoring"):
        train_supervised(model, session.train, torch.nn.functional.cross_entropy, recipe, _ctx(synthetic_benchmark, tmp_path),
                         desc="base", predict=model)


def test_the_runners_scorer_measures_base_class_test_accuracy(synthetic_benchmark, run_options):
    score = base_test_scorer(synthetic_benchmark, None, run_options)
    labels = synthetic_benchmark.test.labels
    base = labels[labels < synthetic_benchmark.schedule.num_seen(0)]
    always_zero = lambda x: torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 4).float()  # noqa: E731
    assert score(always_zero) == pytest.approx(float(np.mean(base == 0)))


def test_a_best_on_test_run_is_marked_in_its_record_and_in_every_report(synthetic_benchmark, run_options, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr("fscil_bench.reporting.report._figures", lambda *args: [])
    store = ResultsStore(tmp_path / "runs")
    for preset in ("smoke", "smoke+best-on-test"):
        result = run_method(synthetic_benchmark, Prototype, preset, 0, run_options)
        assert result.status == "completed", result.error
        key = RunKey(synthetic_benchmark.id, "prototype", preset, 0)
        store.write(key, build_record(key, synthetic_benchmark, Prototype, "test", result, "2025-01-01T00:00:00+00:00",
                                      "cpu", "fscil-bench run"), result.predictions, result.test_labels)
    assert result.extra["not_protocol_clean"] == NOT_PROTOCOL_CLEAN
    assert result.extra["checkpoints"]["base session"]["rule"] == "best-on-test"
    assert result.config["hparams"]["base"]["checkpoint"] == "best-on-test"
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / f"{synthetic_benchmark.id.replace('@', '-v')}.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| prototype ")]
    flagged = next(line for line in rows if "smoke+best-on-test" in line)
    clean = next(line for line in rows if "smoke+best-on-test" not in line)
    assert "NOT PROTOCOL-CLEAN" in flagged and "NOT PROTOCOL-CLEAN" not in clean
    assert "**" not in flagged  # never ranked best
