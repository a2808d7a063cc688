"""Preset overrides: typed parsing against the preset's definition, one-line errors, run identity, cache keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
from fscil_bench.baselines.etf import ETF
from fscil_bench.baselines.prototype import Prototype

from fscil_bench.protocol import Context, MethodBase
from fscil_bench.run.overrides import Override, PresetError, resolve, resolve_grid
from fscil_bench.run.runner import run_method
from fscil_bench.toolkit.base_models import base_model_recipe_key
from fscil_bench.toolkit.training import SGDRecipe


def sets(*texts: str) -> list[Override]:
    return [Override.parse(t) for t in texts]


def error_of(method_cls, *texts: str, preset: str = "quick", family: str = "glyphs") -> str:
    with pytest.raises(PresetError) as info:
        resolve(method_cls, preset, family, sets(*texts))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_nested_override_changes_that_value_only():
    plain = Prototype.resolve_preset("quick", "glyphs")
    chosen = resolve(Prototype, "quick", "glyphs", sets("base.epochs=20", "base.schedule=step", "base.milestones=[12,16]",
                                                       "base.lr=1e-3", "base.nesterov=yes", "base.warmup_start=null"))
    base = chosen.hparams.base
    assert isinstance(base, SGDRecipe)
    assert (base.epochs, base.schedule, base.milestones, base.lr, base.nesterov, base.warmup_start) == (
        20, "step", (12, 16), 0.001, True, None)
    assert base.batch_size == plain.base.batch_size and base.warmup_epochs == plain.base.warmup_epochs
    assert chosen.hparams.backbone == plain.backbone and chosen.hparams.scale == plain.scale
    assert Prototype.resolve_preset("quick", "glyphs") == plain and plain.base.epochs != 20  # the preset is untouched
    assert chosen.overrides == {"base.epochs": 20, "base.lr": 0.001, "base.milestones": [12, 16], "base.nesterov": True,
                                "base.schedule": "step", "base.warmup_start": None}


def test_a_badly_typed_value_is_one_line_naming_the_field_and_its_type():
    assert error_of(Prototype, "base.epochs=2.5") == "base.epochs must be int, not '2.5' (prototype [quick])"
    assert error_of(Prototype, "base.lr=fast").startswith("base.lr must be float, not 'fast'")
    assert error_of(Prototype, "base.lr=nan").startswith("base.lr must be float")  # records are strict JSON
    assert error_of(Prototype, "base.nesterov=maybe").startswith("base.nesterov must be bool")
    assert error_of(Prototype, "base.milestones=[12,x]").startswith("base.milestones must be tuple[float, ...]")
    assert error_of(Prototype, "base=3").startswith("base must be SGDRecipe, not '3'")
    with pytest.raises(PresetError, match=r"^pretrained must be str \| None, not '\[1\]' \(etf \[quick\]\)$"):
        resolve(ETF, "quick", "glyphs", [Override("pretrained", [1])])  # a list read from a run file


def test_an_unknown_key_lists_the_valid_keys_and_the_closest_one():
    message = error_of(Prototype, "base.epoch=20")
    assert message.startswith("unknown key 'base.epoch' for prototype [quick] (did you mean 'base.epochs'")
    assert "valid keys under base: base.lr, " in message and "base.batch_size" in message
    top = error_of(Prototype, "epochs=20")
    assert "(did you mean 'base.epochs'?)" in top and top.endswith("valid keys: backbone, base.*, scale, classifier, pretrained, frozen_stages, train_view, test_view, "
                                                     "train_backbone, backbone_args, normalize_inputs")
    assert "is a float, not a group of settings" in error_of(Prototype, "base.lr.x=1")


def test_a_whole_nested_setting_can_be_set_then_refined():
    assert "warm_start is None in etf [paper]" in error_of(ETF, "warm_start.epochs=3", preset="paper", family="cifar100")
    chosen = resolve(ETF, "paper", "cifar100", sets("warm_start={epochs: 3, lr: 0.1}", "warm_start.batch_size=8"))
    assert chosen.hparams.warm_start == SGDRecipe(epochs=3, lr=0.1, batch_size=8)
    # Setting a whole value later supersedes what was set inside it earlier, in the run's identity too.
    later = resolve(ETF, "paper", "cifar100", sets("warm_start={epochs: 9, lr: 0.1}", "warm_start.batch_size=8",
                                                   "warm_start={epochs: 3, lr: 0.1, batch_size: 8}"))
    assert later.hparams == chosen.hparams and list(later.overrides) == ["warm_start"]


def test_the_preset_id_is_a_digest_of_the_converted_overrides():
    plain = resolve(Prototype, "quick", "glyphs", [])
    assert plain.id == "quick" and plain.overrides == {}
    one = resolve(Prototype, "quick", "glyphs", sets("base.lr=0.1", "base.epochs=20"))
    same = resolve(Prototype, "quick", "glyphs", sets("base.epochs=20", "base.lr=1e-1"))
    other = resolve(Prototype, "quick", "glyphs", sets("base.epochs=21", "base.lr=0.1"))
    assert one.id == same.id and one.id.startswith("quick+") and len(one.id) == len("quick+") + 8
    assert other.id != one.id
    # Re-applying the canonical overrides (as a worker process does) gives the same preset.
    again = resolve(Prototype, "quick", "glyphs", one.overrides)
    assert again.hparams == one.hparams and again.id == one.id
    # A value from a run file (already parsed) converts like the same text.
    assert resolve(Prototype, "quick", "glyphs", [Override("base.epochs", 20), Override("base.lr", 0.1)]).id == one.id


def test_overrides_scoped_to_a_method_apply_to_it_only():
    scoped = sets("prototype:base.epochs=7")
    assert resolve(Prototype, "quick", "glyphs", scoped).hparams.base.epochs == 7
    assert resolve(ETF, "quick", "glyphs", scoped).id == "quick"
    with pytest.raises(PresetError, match="names method 'etf', which this run does not include"):
        resolve_grid({"prototype": Prototype}, ["quick"], ["glyphs"], sets("etf:base.epochs=7"))


@dataclass(frozen=True)
class Choice:
    mode: Literal["mean", "max"] = "mean"
    sizes: tuple[int, int] = (1, 2)


class PlainDict(MethodBase):
    name = "plain-dict"
    presets = {"quick": {"pool": 8, "scale": 1.5, "label": "x", "inner": {"on": False}}, "typed": Choice()}


def test_a_plain_dict_preset_keeps_the_types_of_its_values():
    chosen = resolve(PlainDict, "quick", "glyphs", sets("pool=16", "scale=2", "label=y", "inner.on=true"))
    assert chosen.hparams == {"pool": 16, "scale": 2, "label": "y", "inner": {"on": True}}
    assert error_of(PlainDict, "pool=abc") == "pool must be int, not 'abc' (plain-dict [quick])"
    assert "did you mean 'pool'" in error_of(PlainDict, "pol=3")
    assert resolve(PlainDict, "typed", "glyphs", sets("mode=max", "sizes=[3,4]")).hparams == Choice("max", (3, 4))
    assert error_of(PlainDict, "mode=min", preset="typed").startswith("mode must be Literal['mean', 'max']")
    assert error_of(PlainDict, "sizes=[1,2,3]", preset="typed").startswith("sizes must be tuple[int, int]")


def test_a_preset_that_no_method_has_is_one_error_naming_the_presets():
    with pytest.raises(PresetError) as info:
        resolve_grid({"prototype": Prototype, "etf": ETF}, ["fast"], ["glyphs"])
    assert str(info.value) == "unknown preset 'fast'; the methods' presets: quick, smoke, paper, pretrained"
    with pytest.raises(PresetError, match=r"did you mean 'paper'"):
        resolve_grid({"prototype": Prototype}, ["papr"], ["glyphs"])
    with pytest.raises(PresetError, match=r"^method 'plain-dict' has no preset 'smoke'; its presets: quick, typed"):
        resolve_grid({"prototype": Prototype, "plain-dict": PlainDict}, ["smoke"], ["glyphs"])


def test_an_override_of_the_base_recipe_changes_the_base_model_cache_key(synthetic_benchmark, run_options):
    """The dry run's keys (``base_model_recipes``) are the keys the run uses, and base.epochs is in them."""
    info = synthetic_benchmark.info()
    planned, used = {}, {}
    for label, overrides in (("plain", {}), ("epochs", {"base.epochs": 1}), ("scale", {"scale": 4.0})):
        chosen = resolve(Prototype, "smoke", info.family, overrides)
        ctx = Context.create(info, chosen.hparams, 0, cache_dir=run_options.cache_dir)
        planned[label] = [base_model_recipe_key(info.id, 0, r) for r in Prototype().base_model_recipes(ctx)]
        if label != "scale":
            result = run_method(synthetic_benchmark, Prototype, "smoke", 0, run_options, chosen.overrides)
            assert result.status == "completed", result.error
            assert result.config["overrides"] == chosen.overrides
            assert result.config["hparams"]["base"]["epochs"] == chosen.hparams.base.epochs
            used[label] = [result.extra["base_model"]["recipe_key"]]
    assert planned["plain"] == used["plain"] and planned["epochs"] == used["epochs"]
    assert used["epochs"] != used["plain"]
    assert planned["scale"] == planned["plain"]  # a value the base model does not use leaves its key alone


def test_the_neck_learners_planned_keys_are_the_keys_it_uses(synthetic_benchmark, run_options):
    info = synthetic_benchmark.info()
    overrides = {"feature_dim": 12, "base.epochs": 1, "session.steps": 2}
    chosen = resolve(ETF, "smoke", info.family, overrides)
    ctx = Context.create(info, chosen.hparams, 0, cache_dir=run_options.cache_dir)
    recipes = ETF().base_model_recipes(ctx)
    result = run_method(synthetic_benchmark, ETF, "smoke", 0, run_options, chosen.overrides)
    assert result.status == "completed", result.error
    assert [base_model_recipe_key(info.id, 0, r) for r in recipes] == [result.extra["base_model"]["recipe_key"]]
    assert recipes[0]["feature_dim"] == 12 and recipes[0]["sgd"]["epochs"] == 1


def test_the_track_follows_the_pretrained_weights_after_the_overrides():
    assert resolve(Prototype, "quick", "glyphs").track == "scratch"
    assert resolve(Prototype, "pretrained", "glyphs").track == "pretrained-timm-vit-b16-in21k"
    moved = resolve(Prototype, "pretrained", "glyphs", [Override("pretrained", "clip-vit-b16-openai")])
    assert moved.track == "pretrained-clip-vit-b16-openai" and moved.id.startswith("pretrained+")
    mine = resolve(ETF, "quick", "glyphs", [Override("warm_start", "null"), Override("pretrained", "/w/My ViT.pth")])
    assert mine.track == "pretrained-My_ViT"
    with pytest.raises(PresetError, match="set pretrained"):  # a frozen network needs its weights
        resolve(Prototype, "pretrained", "glyphs", [Override("pretrained", "null")])
