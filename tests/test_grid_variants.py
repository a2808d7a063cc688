"""`fscil-bench run --splits ... --orders ...`: the grid, its records, resuming, the executors, peak memory."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fscil_bench.benchmarks import LoadOptions, get_benchmark
from fscil_bench.benchmarks.variants import benchmark_variant
from fscil_bench.cli import main
from fscil_bench.run.peak_memory import PeakMemory
from fscil_bench.schedules.draws import variant_record

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = str(ROOT / "examples" / "nearest_mean_pixels.py")
METHOD = "nearest-mean-pixels"  # no training: a run costs its evaluation only
BENCH = "glyphs100-tiny"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    get_benchmark(BENCH).load(LoadOptions(cache_dir=cache, log=lambda msg: None))
    return cache


def test_the_grid_runs_every_seed_split_and_order_and_records_them(tmp_path, cache_dir, capsys):
    runs = tmp_path / "runs"
    args = ["run", "-b", BENCH, "--plugin", PLUGIN, "-m", METHOD, "--splits", "0", "1", "--orders", "0", "3",
            "-o", str(runs), "--cache-dir", str(cache_dir), "--device", "cpu"]
    assert main(args) == 0
    assert "4 of 4 runs complete" in capsys.readouterr().out
    folder = runs / f"{BENCH}@1" / METHOD / "quick"
    assert sorted(p.name for p in folder.iterdir()) == ["seed-0", "seed-0-order-3", "seed-0-split-1",
                                                        "seed-0-split-1-order-3"]
    standard = get_benchmark(BENCH).load(LoadOptions(cache_dir=cache_dir, log=lambda msg: None))
    digests = set()
    for split, order, name in [(0, 0, "seed-0"), (1, 3, "seed-0-split-1-order-3"), (0, 3, "seed-0-order-3")]:
        record = json.loads((folder / name / "record.json").read_text())
        assert (record["split"], record["order"], record["status"]) == (split, order, "completed")
        # The record names the schedule exactly: rebuilding the variant gives the same digest and shots.
        variant = benchmark_variant(standard, split, order)
        assert record["schedule"] == variant_record(variant.schedule, variant.variant)
        digests.add(record["schedule"]["sha256"])
        assert record["peak_memory"]["device"] == "cpu" and record["peak_memory"]["bytes"] >= 0
        # The evaluated test labels are the relabelled ones.
        labels = np.load(folder / name / "predictions.npz")["test_labels"]
        np.testing.assert_array_equal(labels, variant.test.labels)
        assert record["metrics"]["session_acc"][0] == json.loads((folder / "seed-0" / "record.json").read_text())[
            "metrics"]["session_acc"][0]  # the base session is the same in every variant
    assert len(digests) == 3
    assert main(args) == 0  # a rerun skips every finished run
    out = capsys.readouterr().out
    assert out.count("already complete, skipped") == 4 and f"{BENCH}@1 {METHOD} [quick] seed 0 split 1 order 3" in out


@pytest.mark.parametrize("option", ["--splits", "--orders"])
def test_negative_splits_and_orders_are_one_error_line(tmp_path, capsys, option):
    assert main(["run", "-b", BENCH, "-m", "prototype", "-o", str(tmp_path / "runs"), option, "0", "-2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {option} must be integers >= 0 (0 is the standard one), not -2"]


def test_slurm_jobs_carry_their_split_and_order(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    from test_executors import fake_slurm

    fake_slurm(tmp_path / "bin", tmp_path / "sbatch.log")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "submitit"
    code = main(["run", "-b", BENCH, "-m", "prototype", "--seeds", "0", "1", "--splits", "0", "2", "--orders", "1",
                 "-o", str(tmp_path / "runs"), "--executor", "slurm", "--slurm-folder", str(folder)])
    assert code == 0 and "submitted 4 runs" in capsys.readouterr().out
    jobs = []
    for path in sorted(folder.glob("4242_*_submitted.pkl")):
        with open(path, "rb") as handle:
            jobs.append(pickle.load(handle).args[0])
    assert sorted((j.seed, j.split, j.order) for j in jobs) == [(0, 0, 1), (0, 2, 1), (1, 0, 1), (1, 2, 1)]
    assert "seed 1 split 2 order 1" in next(j for j in jobs if (j.seed, j.split) == (1, 2)).label


def test_peak_memory_on_the_cpu_sees_an_allocation_inside_the_block():
    with PeakMemory("cpu") as peak:
        block = np.ones(40 * 1024**2 // 8)  # 40 MiB, touched
        del block
    assert peak.result["kind"] in ("rss_peak", "rss_lifetime_peak")
    if peak.result["kind"] == "rss_peak":
        assert 35 * 1024**2 < peak.result["bytes"] < 200 * 1024**2
    with PeakMemory("cpu") as quiet:
        pass
    assert quiet.result["bytes"] < 20 * 1024**2


def test_peak_memory_on_cuda_reads_the_allocator_peak_above_the_start(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5000)
    with PeakMemory("cuda:0") as peak:
        pass
    assert calls == ["reset"]
    assert peak.result == {"device": "cuda:0", "kind": "cuda_max_allocated", "bytes": 4000, "start_bytes": 1000}


HUNGRY = '''
import numpy as np
import torch

from fscil_bench import MethodBase


class Hungry(MethodBase):
    """Holds 64 MiB from its base session on: a peak the runner's own process never sees."""

    name = "hungry"
    presets = {"quick": {}}

    def fit_base(self, session, ctx):
        self.block = np.ones(64 << 20, dtype=np.uint8)
        self.num_seen = session.num_seen

    def fit_session(self, session, ctx):
        self.num_seen = session.num_seen

    def predict(self, images):
        return torch.zeros(len(images), self.num_seen)
'''


@pytest.mark.parametrize("isolation", ["process", "none"])
def test_peak_memory_is_measured_where_the_method_runs(tmp_path, cache_dir, isolation):
    plugin = tmp_path / "hungry.py"
    plugin.write_text(HUNGRY)
    runs = tmp_path / "runs"
    assert main(["run", "-b", BENCH, "--plugin", str(plugin), "-m", "hungry", "-o", str(runs), "--cache-dir",
                 str(cache_dir), "--device", "cpu", "--isolation", isolation]) == 0
    record = json.loads((runs / f"{BENCH}@1" / "hungry" / "quick" / "seed-0" / "record.json").read_text())
    assert record["isolation"]["level"] == isolation
    assert record["peak_memory"]["bytes"] >= 64 << 20
