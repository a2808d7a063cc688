"""``fscil-bench run`` with --set, --config and --dry-run, end to end on glyphs100-tiny (no training)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fscil_bench.cache import sha256_file, write_checked
from fscil_bench.cli import main
from fscil_bench.reporting.collect import collect
from fscil_bench.reporting.provenance import gather
from fscil_bench.results.store import ResultsStore
from fscil_bench.run.overrides import preset_id
from fscil_bench.toolkit.base_models import base_model_path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = REPO / "examples" / "nearest_mean_pixels.py"
NMP = ["--benchmark", "glyphs100-tiny", "--plugin", str(EXAMPLE_PLUGIN), "--methods", "nearest-mean-pixels"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One dataset cache for the module (glyphs100-tiny is generated once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(shared_cache, monkeypatch) -> Path:
    monkeypatch.setenv("FSCIL_BENCH_CACHE", str(shared_cache))
    return shared_cache


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def plan_lines(capsys) -> list[str]:
    """A dry run's printed plan, without the note a machine with no sandbox adds before it."""
    return [line for line in capsys.readouterr().out.splitlines() if not line.startswith("note: no sandbox")]


def record_of(runs: Path, preset: str, seed: int = 0) -> dict:
    return json.loads((runs / "glyphs100-tiny@1" / "nearest-mean-pixels" / preset / f"seed-{seed}" / "record.json").read_text())


def test_bad_overrides_and_presets_stop_the_run_before_anything_is_written(tmp_path, cache, capsys):
    runs = tmp_path / "runs"
    assert main(["run", *NMP, "--set", "pol=4", "--output", str(runs)]) == 2
    assert one_error_line(capsys) == ("error: unknown key 'pol' for nearest-mean-pixels [quick] (did you mean 'pool'?); "
                                      "valid keys: pool")
    assert main(["run", *NMP, "--set", "pool=4.5", "--output", str(runs)]) == 2
    assert one_error_line(capsys) == "error: pool must be int, not '4.5' (nearest-mean-pixels [quick])"
    assert main(["run", *NMP, "--set", "pool", "--output", str(runs)]) == 2
    assert "expects [METHOD:]KEY=VALUE" in one_error_line(capsys)
    assert main(["run", "--methods", "prototype,finetune", "--preset", "fast", "--output", str(runs)]) == 2
    assert one_error_line(capsys) == "error: unknown preset 'fast'; the methods' presets: quick, smoke, paper, pretrained"
    assert main(["run", *NMP[:-1], "nearest-mean-pixels,prototype", "--preset", "smoke", "--output", str(runs)]) == 2
    assert one_error_line(capsys) == ("error: method 'nearest-mean-pixels' has no preset 'smoke'; its presets: quick, paper "
                                      "(choose the methods with --methods)")
    assert not runs.exists()


def test_an_overridden_run_and_a_plain_one_are_kept_apart_on_resume_and_in_reports(tmp_path, cache, capsys):
    runs = tmp_path / "runs"
    plain, changed = ["run", *NMP, "--output", str(runs)], ["run", *NMP, "--set", "pool=4", "--output", str(runs)]
    assert main(plain) == 0
    assert main(changed) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out and out.count("1 of 1 runs complete") == 2
    overridden = preset_id("quick", {"pool": 4})
    assert re.fullmatch(r"quick\+[0-9a-f]{8}", overridden)
    record = record_of(runs, overridden)
    assert record["preset"] == overridden
    assert record["config"]["preset"] == "quick" and record["config"]["overrides"] == {"pool": 4}
    assert record["config"]["hparams"] == {"pool": 4} and record["memory"]["bytes"] == 4 * 100 * 4**2
    assert record_of(runs, "quick")["config"] == {"preset": "quick", "overrides": {}, "hparams": {"pool": 8}}
    for args in (plain, changed):  # each resumes as itself
        assert main(args) == 0
        assert "nearest-mean-pixels [" in (out := capsys.readouterr().out) and "already complete, skipped" in out
    results = collect(ResultsStore(runs))["glyphs100-tiny@1"]
    assert sorted(results.rows) == [("nearest-mean-pixels", "quick"), ("nearest-mean-pixels", overridden)]
    assert all(row.seeds == [0] for row in results.rows.values())  # never averaged together
    assert gather(results.records).presets == ["quick", f"{overridden} (quick with pool=4)"]


def test_a_run_file_with_a_command_line_override_of_it(tmp_path, cache, capsys):
    folder = tmp_path / "paper"
    folder.mkdir()
    shutil.copy(EXAMPLE_PLUGIN, folder / "nmp.py")
    run_file = folder / "run.yaml"
    run_file.write_text("benchmarks: glyphs100-tiny\nmethods: [nearest-mean-pixels]\nplugins: [nmp.py]\nseeds: [0, 1]\n"
                        "overrides:\n  pool: 4\noutput: runs  # relative to this file\n")
    assert main(["run", "--config", str(run_file), "--set", "pool=2", "--seeds", "1"]) == 0
    runs = folder / "runs"
    record = record_of(runs, preset_id("quick", {"pool": 2}), seed=1)
    assert record["config"]["overrides"] == {"pool": 2} and record["config"]["hparams"] == {"pool": 2}
    assert record["run_file"] == {"path": str(run_file.resolve()), "sha256": sha256_file(run_file)}
    assert [p.name for p in runs.glob("*/*/*/seed-*")] == ["seed-1"]  # the command line's seeds won
    capsys.readouterr()
    run_file.write_text("benchmark: glyphs100-tiny\nmethod: [prototype]\n")
    assert main(["run", "--config", str(run_file)]) == 2
    assert "unknown option 'method' (did you mean 'methods'?)" in one_error_line(capsys)
    run_file.write_text("seeds: [zero]\n")
    assert main(["run", "--config", str(run_file)]) == 2
    assert one_error_line(capsys).endswith("seeds must be a list of integers, not ['zero']")


def test_a_dry_run_shows_the_grid_the_recipes_and_the_base_models_and_writes_nothing(tmp_path, cache, capsys):
    runs = tmp_path / "runs"
    assert main(["run", *NMP, "--output", str(runs)]) == 0
    before = sorted(p for p in runs.rglob("*"))
    capsys.readouterr()
    dry = ["run", "--benchmark", "glyphs100-tiny", "--plugin", str(EXAMPLE_PLUGIN), "--methods",
           "nearest-mean-pixels,prototype,finetune", "--seeds", "0", "1", "--set", "prototype:base.epochs=1",
           "--output", str(runs), "--dry-run"]
    assert main(dry) == 0
    lines = plan_lines(capsys)
    assert lines[:3] == ["dry run: nothing is trained or written", "glyphs100-tiny@1", "  nearest-mean-pixels [quick]"]
    assert lines[3:6] == ["    recipe: {pool: 8}", "    seed 0: complete, would be skipped",
                          "    seed 1: would run; base models not declared by the method"]
    proto = preset_id("quick", {"base.epochs": 1})
    assert lines[6] == f"  prototype [{proto}]  overrides: base.epochs=1"
    assert lines[7].startswith("    recipe: {backbone: convnet4-small, base: {lr: 0.05,") and "epochs: 1," in lines[7]
    key = re.fullmatch(r"    seed 0: would run; base model ([0-9a-f]{16}) \(cross-entropy\): train", lines[8]).group(1)
    # The override is scoped to prototype: finetune keeps the preset's base recipe, so another model.
    assert lines[10] == "  finetune [quick]"
    finetune_key = re.search(r"base model ([0-9a-f]{16})", lines[12]).group(1)
    assert finetune_key != key
    assert lines[-1] == "6 runs: 5 would run, 1 complete (skipped); base models: 4 to train, 0 to load from the cache"
    assert sorted(p for p in runs.rglob("*")) == before  # no record, no folder
    assert not (cache / "base_models").exists()
    # Once the model is in the cache, the dry run says it would be loaded.
    write_checked(base_model_path(cache, key), lambda tmp: tmp.write_bytes(b"weights"))
    assert main(dry) == 0
    out = capsys.readouterr().out
    assert f"seed 0: would run; base model {key} (cross-entropy): load from the cache" in out
    assert out.splitlines()[-1].endswith("base models: 3 to train, 1 to load from the cache")


def test_a_dry_run_tells_a_base_model_that_an_earlier_run_of_the_grid_trains(tmp_path, cache, capsys):
    assert main(["run", "--benchmark", "glyphs100-tiny", "--methods", "prototype,finetune", "--output",
                 str(tmp_path / "runs"), "--dry-run"]) == 0
    lines = plan_lines(capsys)
    first = re.search(r"base model ([0-9a-f]{16}) \(cross-entropy\): train$", lines[4]).group(1)
    assert lines[7] == f"    seed 0: would run; base model {first} (cross-entropy): load (trained by an earlier run of this grid)"


def test_a_dry_run_shows_the_own_base_methods_warm_starting_from_the_shared_model(tmp_path, cache, capsys):
    """alice and savc have views of their own, s3c none: all three start from the model prototype
    trains (keyed without their views), then train their own."""
    assert main(["run", "--benchmark", "glyphs100-tiny", "--methods", "prototype,alice,savc,s3c", "--output",
                 str(tmp_path / "runs"), "--dry-run"]) == 0
    lines = plan_lines(capsys)
    shared = re.search(r"base model ([0-9a-f]{16}) \(cross-entropy\): train$", lines[4]).group(1)
    for name, line in zip(["alice", "savc", "s3c"], [lines[7], lines[10], lines[13]]):
        assert re.fullmatch(rf"    seed 0: would run; base model {shared} \(cross-entropy\): load \(trained by an "
                            rf"earlier run of this grid\); base model [0-9a-f]{{16}} \({name}\): train", line), line


def test_a_grid_job_carries_the_overrides_and_the_run_file_to_its_worker(tmp_path, cache):
    from fscil_bench.run.executors import GridJob, run_job
    from fscil_bench.run.overrides import Override

    job = GridJob(benchmark="glyphs100-tiny", method="nearest-mean-pixels", seed=0, preset="quick",
                  output=str(tmp_path / "runs"), cache_dir=str(cache), plugins=(str(EXAMPLE_PLUGIN),),
                  overrides=(Override("pool", "4"), Override("base.epochs", "3", method="prototype")),
                  run_file=(("path", "/papers/run.yaml"), ("sha256", "ab" * 32)))
    assert job.label == "glyphs100-tiny nearest-mean-pixels [quick with pool=4, prototype:base.epochs=3] seed 0"
    assert run_job(job)[0] == "completed"
    overridden = preset_id("quick", {"pool": 4})
    record = record_of(tmp_path / "runs", overridden)
    assert record["config"]["hparams"] == {"pool": 4}
    assert record["run_file"] == {"path": "/papers/run.yaml", "sha256": "ab" * 32}
    assert (tmp_path / "runs" / "glyphs100-tiny@1" / "nearest-mean-pixels" / overridden / "seed-0" / ".lock").exists()
    assert [p.name for p in (tmp_path / "runs" / "glyphs100-tiny@1" / "nearest-mean-pixels").iterdir()] == [overridden]
    assert run_job(job)[0] == "skipped"


def test_a_run_file_names_splits_and_orders_and_they_combine_with_overrides(tmp_path, cache, capsys):
    from fscil_bench.reporting.collect import RunCoord

    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"benchmark: glyphs100-tiny\nmethods: [nearest-mean-pixels]\nplugin: [{EXAMPLE_PLUGIN}]\n"
                        "seeds: [0]\nsplits: [0, 2]\norder: 1\noverrides:\n  pool: 4\noutput: runs\n")
    assert main(["run", "--config", str(run_file), "--orders", "0", "1"]) == 0  # the command line's orders win
    overridden = preset_id("quick", {"pool": 4})
    folder = tmp_path / "runs" / "glyphs100-tiny@1" / "nearest-mean-pixels" / overridden
    assert sorted(p.name for p in folder.iterdir()) == ["seed-0", "seed-0-order-1", "seed-0-split-2",
                                                        "seed-0-split-2-order-1"]
    record = json.loads((folder / "seed-0-split-2-order-1" / "record.json").read_text())
    assert (record["preset"], record["split"], record["order"]) == (overridden, 2, 1)
    assert record["schedule"]["split"] == 2 and record["schedule"]["order"] == 1
    assert record["config"]["overrides"] == {"pool": 4}
    row = collect(ResultsStore(tmp_path / "runs"))["glyphs100-tiny@1"].rows["nearest-mean-pixels", overridden]
    assert sorted(r.coord for r in row.runs) == [RunCoord(0, 0, 0), RunCoord(0, 0, 1), RunCoord(0, 2, 0), RunCoord(0, 2, 1)]
    assert row.seeds == [0]  # the leaderboard's cells: the standard split and order only
    capsys.readouterr()
    run_file.write_text("splits: [one]\n")
    assert main(["run", "--config", str(run_file)]) == 2
    assert one_error_line(capsys).endswith("splits must be a list of integers >= 0 (few-shot draws; 0: the standard one), "
                                           "not ['one']")
    run_file.write_text("orders: [-1]\n")
    assert main(["run", "--config", str(run_file), "--output", str(tmp_path / "none")]) == 2
    assert one_error_line(capsys) == "error: --orders must be integers >= 0 (0 is the standard one), not -1"


def test_a_dry_run_lists_every_split_and_order_and_their_shared_base_model(tmp_path, cache, capsys):
    """Other draws and orders keep the base session: their base model is the standard split's."""
    # base.epochs=2: a recipe no other test of this module puts in the shared cache
    assert main(["run", "--benchmark", "glyphs100-tiny", "--methods", "prototype", "--set", "base.epochs=2",
                 "--splits", "0", "3", "--orders", "0", "1", "--output", str(tmp_path / "runs"), "--dry-run"]) == 0
    lines = plan_lines(capsys)
    assert lines[2] == f"  prototype [{preset_id('quick', {'base.epochs': 2})}]  overrides: base.epochs=2"
    key = re.fullmatch(r"    seed 0: would run; base model ([0-9a-f]{16}) \(cross-entropy\): train", lines[4]).group(1)
    assert lines[5:8] == [f"    seed 0{where}: would run; base model {key} (cross-entropy): load (trained by an earlier "
                          "run of this grid)" for where in (" order 1", " split 3", " split 3 order 1")]
    assert lines[-1] == "4 runs: 4 would run, 0 complete (skipped); base models: 1 to train, 0 to load from the cache"


def test_a_dry_run_names_the_track_the_overrides_give(tmp_path, cache, capsys):
    base = ["run", "--benchmark", "glyphs100-tiny", "--methods", "simplecil", "--output", str(tmp_path / "runs"), "--dry-run"]
    assert main(base) == 0
    assert "  simplecil [quick]" in capsys.readouterr().out.splitlines()
    assert main([*base, "--set", "pretrained=timm-vit-b16-in21k"]) == 0
    lines = plan_lines(capsys)
    proto = preset_id("quick", {"pretrained": "timm-vit-b16-in21k"})
    assert f"  simplecil [{proto}] [pretrained-timm-vit-b16-in21k]  overrides: pretrained=timm-vit-b16-in21k" in lines
    assert "    seed 0: would run; no cached base model" in lines  # a frozen pretrained network: nothing to train
