"""Benchmark grids through submitit: local worker processes, kill-and-resume, and the Slurm job array."""

from __future__ import annotations

import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_until

submitit = pytest.importorskip("submitit")

from fscil_bench.benchmarks import LoadOptions, get_benchmark  # noqa: E402
from fscil_bench.cli import main  # noqa: E402
from fscil_bench.results.store import SCHEMA_VERSION, ResultsStore, RunKey  # noqa: E402
from fscil_bench.run.executors import GridJob, key_lock, run_job  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = str(ROOT / "examples" / "nearest_mean_pixels.py")
METHOD = "nearest-mean-pixels"  # no training: each job costs little more than starting Python
BENCH = "glyphs100-tiny"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    get_benchmark(BENCH).load(LoadOptions(cache_dir=cache, log=lambda msg: None))  # generate the data once
    return cache


def grid_args(runs: Path, cache: Path, logs: Path, seeds: list[int], workers: int, plugin: str = PLUGIN,
              method: str = METHOD) -> list[str]:
    return ["run", "-b", BENCH, "--plugin", plugin, "-m", method, "--seeds", *map(str, seeds), "--device", "cpu",
            "-o", str(runs), "--cache-dir", str(cache), "--executor", "local", "--workers", str(workers),
            "--slurm-folder", str(logs)]


def record_files(runs: Path) -> dict[int, Path]:
    paths = sorted(runs.glob("*/*/*/seed-*/record.json"))
    seeds = [int(p.parent.name.removeprefix("seed-")) for p in paths]
    assert len(seeds) == len(set(seeds))
    return dict(zip(seeds, paths))


def test_a_worker_waits_for_the_key_it_shares_then_skips_it(tmp_path, cache_dir, monkeypatch):
    """Two workers given the same run: while one holds the key's lock the other waits; once the
    first has written the record, the second finds it complete and leaves it untouched."""
    import fscil_bench.run.executors as executors

    waiting = threading.Event()
    real_lock = executors.exclusive_lock
    monkeypatch.setattr(executors, "exclusive_lock", lambda path, on_wait=None: real_lock(path, lambda m: waiting.set()))
    job = GridJob(benchmark=BENCH, method=METHOD, seed=0, preset="quick", output=str(tmp_path / "runs"),
                  cache_dir=str(cache_dir), plugins=(PLUGIN,))
    store = ResultsStore(job.output)
    key = RunKey(get_benchmark(BENCH).id, METHOD, "quick", 0)
    answer: list[tuple[str, str]] = []
    with key_lock(store.run_dir(key)):  # the first worker, running
        second = threading.Thread(target=lambda: answer.append(run_job(job)))
        second.start()
        assert waiting.wait(600), "the second worker never reached the lock"
        assert not answer and not store.run_dir(key).joinpath("record.json").exists()  # blocked, wrote nothing
        record = store.write(key, {"status": "completed", "schema_version": SCHEMA_VERSION}, [], np.zeros(1))
        written = record.stat().st_mtime_ns, record.read_bytes()
    second.join()
    assert answer and answer[0][0] == "skipped"
    assert (record.stat().st_mtime_ns, record.read_bytes()) == written


HOLD_PLUGIN = '''
import os, threading
from pathlib import Path
import torch
from fscil_bench import MethodBase


class Held(MethodBase):
    """Predicts class 0. The run whose seed is $HOLD_SEED creates $HOLD_FILE, then never finishes."""

    name = "held"
    presets = {"quick": {}}

    def fit_base(self, session, ctx):
        if str(ctx.seed) == os.environ.get("HOLD_SEED"):
            Path(os.environ["HOLD_FILE"]).touch()
            threading.Event().wait()
        self.n = session.num_seen

    def fit_session(self, session, ctx):
        self.n = session.num_seen

    def predict(self, images):
        return torch.zeros(len(images), self.n)
'''


def test_a_killed_grid_resumes_without_losing_or_repeating_finished_runs(tmp_path, cache_dir, capsys):
    runs, logs, seeds = tmp_path / "runs", tmp_path / "logs", [0, 1, 2]
    plugin, held = tmp_path / "held.py", tmp_path / "seed-2-started"
    plugin.write_text(HOLD_PLUGIN)
    args = grid_args(runs, cache_dir, logs, seeds, 2, plugin=str(plugin), method="held")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOLD_SEED": "2", "HOLD_FILE": str(held)}
    # The whole grid (parent and its workers) in its own process group. Two workers take seeds 0
    # and 1; seed 2 starts only once one of them has finished (its record written), and never
    # ends: the grid is killed then, with one or two runs finished and seed 2 not.
    grid = subprocess.Popen([sys.executable, "-m", "fscil_bench.cli", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(held.exists, "seed 2 started", grid)
    finally:
        os.killpg(grid.pid, signal.SIGKILL)
        grid.wait()
    finished = record_files(runs)
    assert 1 <= len(finished) and 2 not in finished, "the grid should be cut midway"
    before = {seed: (path.stat().st_mtime_ns, path.read_bytes()) for seed, path in finished.items()}

    assert main(args) == 0  # without $HOLD_SEED: every run finishes
    out = capsys.readouterr().out
    after = record_files(runs)
    assert sorted(after) == seeds  # every run, exactly once
    for seed, (mtime, content) in before.items():  # finished runs were skipped, not redone
        assert (after[seed].stat().st_mtime_ns, after[seed].read_bytes()) == (mtime, content)
        assert f"seed {seed}: already complete, skipped" in out
    store = ResultsStore(runs)
    assert all(store.is_complete(RunKey(get_benchmark(BENCH).id, "held", "quick", s)) for s in seeds)
    assert "3 of 3 runs complete" in out


def fake_slurm(bin_dir: Path, log: Path) -> None:
    """``srun`` and ``sbatch`` stand-ins: sbatch records the script it was given and answers like Slurm."""
    bin_dir.mkdir()
    scripts = {"srun": "#!/bin/sh\nexit 0\n",
               "sbatch": f'#!/bin/sh\necho "$1" >> {log}\necho "Submitted batch job 4242"\n'}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)


def test_the_slurm_grid_is_one_job_array_with_the_requested_resources(tmp_path, monkeypatch, capsys):
    fake_slurm(tmp_path / "bin", tmp_path / "sbatch.log")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    runs, folder = tmp_path / "runs", tmp_path / "submitit"
    # A finished run is not resubmitted.
    bench_id = get_benchmark(BENCH).id
    ResultsStore(runs).write(RunKey(bench_id, "prototype", "quick", 0),
                             {"status": "completed", "schema_version": SCHEMA_VERSION}, [], np.zeros(1))

    code = main(["run", "-b", BENCH, "-m", "prototype", "--seeds", "0", "1", "2", "3", "4", "-o", str(runs),
                 "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-gpus", "2", "--slurm-time", "90",
                 "--slurm-mem", "48", "--slurm-cpus", "6", "--workers", "3", "--slurm-folder", str(folder)])
    assert code == 0
    out = capsys.readouterr().out
    assert "submitted 4 runs (1 already complete) as Slurm job 4242" in out

    submitted = (tmp_path / "sbatch.log").read_text().split()
    assert len(submitted) == 1  # one sbatch call: the whole grid is one array
    script = Path(submitted[0]).read_text().splitlines()
    for line in ["#SBATCH --array=0-3%3", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=6", "#SBATCH --time=90",
                 "#SBATCH --mem=48GB", "#SBATCH --nodes=1"]:
        assert line in script
    # One pickled job per array task, each a (benchmark, method, seed) of the unfinished runs.
    pickles = sorted(folder.glob("4242_*_submitted.pkl"))
    assert len(pickles) == 4
    jobs = []
    for path in pickles:
        with open(path, "rb") as handle:
            jobs.append(pickle.load(handle).args[0])
    assert sorted(j.seed for j in jobs) == [1, 2, 3, 4]
    assert {(j.benchmark, j.method, j.preset, j.device, j.output) for j in jobs} == {
        (BENCH, "prototype", "quick", "cuda", str(runs.resolve()))}


def test_slurm_without_a_cluster_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    code = main(["run", "-b", BENCH, "-m", "prototype", "-o", str(tmp_path / "runs"), "--executor", "slurm",
                 "--slurm-folder", str(tmp_path / "submitit")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot submit to Slurm from this machine")


def test_missing_submitit_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # makes `import submitit` fail
    code = main(["run", "-b", BENCH, "-m", "prototype", "-o", str(tmp_path / "runs"), "--executor", "local"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: the local and slurm executors need submitit: pip install 'submitit>=1.5' (or the package's 'cluster' extra)"]


@pytest.mark.parametrize("option, value, message", [
    ("--workers", "0", "error: --workers must be at least 1, not 0"),
    ("--slurm-gpus", "-1", "error: --slurm-gpus must be 0 or more, not -1"),
])
def test_bad_grid_options_are_one_error_line(tmp_path, capsys, option, value, message):
    code = main(["run", "-b", BENCH, "-m", "prototype", "-o", str(tmp_path / "runs"), "--executor", "local", option, value])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


@pytest.mark.slow
def test_a_job_with_two_tasks_trains_data_parallel(tmp_path, cache_dir):
    """The multi-GPU Slurm job's code path on the CPU: submitit starts 2 tasks of one job, they
    form a gloo process group, and only rank 0 writes the record."""
    executor = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
    executor.update_parameters(timeout_min=10, tasks_per_node=2)
    job = GridJob(benchmark=BENCH, method="prototype", seed=0, preset="quick", output=str(tmp_path / "runs"),
                  cache_dir=str(cache_dir), threads=1)
    results = executor.submit(run_job, job).results()
    assert [status for status, _ in results] == ["completed", "completed"]
    records = list((tmp_path / "runs").glob("*/*/*/seed-*/record.json"))
    assert len(records) == 1 and '"world_size": 2' in records[0].read_text()
