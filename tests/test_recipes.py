"""Every ``paper`` preset against the checked-in table of published values, and ``fscil-bench recipe``."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from fscil_bench.baselines.etf import ETF
from fscil_bench.cli import main
from fscil_bench.reporting.recipes import official_table, official_values, recipe_differences
from fscil_bench.run.methods import discover

REGISTRY = discover()
FAMILIES = ("cifar100", "mini_imagenet", "cub200", "glyphs100")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", REGISTRY.names())
def test_every_paper_preset_is_the_published_recipe(method, family):
    """Every field of the preset is in the table with the same value; nothing in the table is missing."""
    hparams = REGISTRY.get(method).resolve_preset("paper", family)
    assert recipe_differences(method, family, hparams) == []


def test_the_table_covers_every_built_in_method_and_family():
    table = official_table()
    assert set(table["recipes"]) == set(REGISTRY.names())
    for method, families in table["recipes"].items():
        assert set(FAMILIES) <= set(families), method


def test_every_entry_cites_a_known_source_or_says_why_not():
    table = official_table()
    keys = set(table["sources"])
    for method in table["recipes"]:
        for family in FAMILIES:
            for field, entry in official_values(method, family).items():
                if "source" in entry:
                    key, _, where = entry["source"].partition(" ")
                    assert key in keys and where, (method, family, field, entry)
                    # a file and line, or a section of a paper
                    assert re.search(r"\.(py|md|json)(:\d+|\b)|section|Algorithm", where), (method, family, field)
                else:
                    assert (entry.get("our_choice") or entry.get("inert", "")).strip(), (method, family, field)


def test_a_drifting_preset_fails():
    paper = ETF.resolve_preset("paper", "cifar100")
    drifted = dataclasses.replace(paper, session_steps=(100,) * 8, base=dataclasses.replace(paper.base, warmup_steps=5))
    problems = recipe_differences("etf", "cifar100", drifted)
    assert any(p.startswith("session_steps: preset [100,") for p in problems)
    assert any(p.startswith("base.warmup_steps: preset 5, published 100") for p in problems)


def test_the_known_disagreements_with_the_recipe_notes_are_the_codes_values():
    """The values where the official code differs from a first reading of the papers."""
    cifar = official_values("etf", "cifar100")
    assert cifar["base.cooldown_steps"]["value"] == 10 and cifar["session.first_step"]["value"] == 1
    assert official_values("etf", "mini_imagenet")["copy_list"]["value"][:2] == [1, 2]
    assert official_values("etf", "cub200")["frozen_stages"]["value"] == 1
    assert official_values("prototype", "cub200")["base.milestones"]["value"] == [30, 40, 60, 80]
    assert official_values("cec", "cub200")["queries"]["value"] == 10


@pytest.mark.parametrize("benchmark", ["cifar100", "mini_imagenet", "cub200"])
@pytest.mark.parametrize("method", ["etf", "prototype"])
def test_recipe_command_prints_the_published_values_with_their_sources(method, benchmark, capsys):
    assert main(["recipe", "--method", method, "--benchmark", benchmark]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{method} [paper] on {benchmark}@1")
    assert "published" in out and "base checkpoint: last" in out and "precision: float32" in out
    if benchmark == "cub200":
        assert "torchvision-resnet18-imagenet1k-v1" in out and "extra data" in out
    if method == "prototype":
        milestones = {"cifar100": "[60, 70]", "mini_imagenet": "[40, 70]", "cub200": "[30, 40, 60, 80]"}[benchmark]
        assert re.search(r"base\.milestones\s+" + re.escape(milestones) + r"\s+published\s+CEC README\.md", out)


def test_recipe_json_and_the_best_on_test_variant(capsys):
    assert main(["recipe", "-m", "etf", "-b", "mini_imagenet", "--preset", "paper+best-on-test", "--json"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    values = {v["field"]: v for v in recipe["values"]}
    assert values["base.milestones"]["value"] == [200, 300, 350, 400, 450]
    assert values["base.milestones"]["provenance"] == "source"
    assert recipe["base_checkpoint"] == {"rule": "best-on-test", "protocol_clean": False}
    assert recipe["views"]["test"]["name"] == "nc-mini-test"


def test_recipe_errors_are_one_line(capsys):
    assert main(["recipe", "-m", "etff", "-b", "cifar100"]) == 2
    assert "did you mean 'etf'" in capsys.readouterr().err
    assert main(["recipe", "-m", "etf", "-b", "cifar100", "--preset", "paper+best"]) == 2
    assert "unknown base checkpoint rule 'best'" in capsys.readouterr().err
