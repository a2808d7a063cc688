"""Sealed evaluation: a method cannot see what the protocol hides, even when it tries.

One grid through the command line runs an honest method beside one plugin per attack
(``tests/plugins/``), with small limits. Every attack either scores at chance or is recorded
as failed with one clear line, and the honest method's record is complete and untouched. The
attacks that only the sandbox stops are skipped where the machine has none; two of them run
once more in this process (isolation ``none``), to show that they are real attacks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from fscil_bench.benchmarks import LoadOptions, get_benchmark
from fscil_bench.cli import main
from fscil_bench.run import order as evaluation_order
from fscil_bench.run.catalog import MethodRef
from fscil_bench.run.limits import Limits
from fscil_bench.run.runner import RunOptions, run_method
from fscil_bench.run.sandbox import find_bwrap, sandbox_problem
from fscil_bench.run.workers import WorkerPool, resolve_isolation

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "tests" / "plugins"
HONEST = "nearest-mean-pixels"
BENCH = "glyphs100-tiny"
NO_SANDBOX = sandbox_problem(find_bwrap())
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"no sandbox on this machine: {NO_SANDBOX}")
METHODS = [HONEST, "attack-order", "attack-interpreter", "attack-files", "attack-write", "attack-network", "segfault",
           "exits", "hog"]
#: Attacks that only the sandbox stops. Without one they succeed (``attack-write`` overwrites every
#: record of the grid), so the grid leaves them out and their tests are skipped.
SANDBOX_ONLY = ("attack-files", "attack-write", "attack-network")
GRID = [m for m in METHODS if NO_SANDBOX is None or m not in SANDBOX_ONLY]
MISBEHAVING = 3  # segfault, exits, hog


class Listener:
    """A loopback port that notes every connection made to it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = self.server.accept()
                self.connections += 1
                conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.server.close()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Every method of :data:`GRID` in one ``fscil-bench run``; the records, output and the
    folders the attacks aimed at."""
    root = tmp_path_factory.mktemp("sealed")
    cache, runs, data_root = root / "cache", root / "runs", root / "data"
    data_root.mkdir()
    (data_root / "test_labels.txt").write_text("0 0 0 1 1 1\n")
    listener = Listener()
    plugins = [str(PLUGINS / f) for f in ("attack_order.py", "attack_interpreter.py", "attack_files.py",
                                          "attack_write.py", "attack_network.py", "hang_import.py", "misbehave.py")]
    args = ["run", "-b", BENCH, "--cache-dir", str(cache), "-o", str(runs), "--data-root", str(data_root),
            "--device", "cpu", "--plugin", str(REPO / "examples" / "nearest_mean_pixels.py")]
    for plugin in plugins:
        args += ["--plugin", plugin]
    args += ["--methods", ",".join(GRID), "--time-limit", "60", "--load-time-limit", "5", "--memory-limit", "2"]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTACK_PORT", str(listener.port))
        mp.setenv("ATTACK_DATA_ROOT", str(data_root))
        mp.setenv("ATTACK_RESULTS", str(runs))
        mp.setenv("ATTACK_TARGETS", os.pathsep.join(map(str, [runs, cache, root, data_root])))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    listener.close()
    records = {}
    for method in GRID:
        path = runs / f"{BENCH}@1" / method / "quick" / "seed-0" / "record.json"
        records[method] = json.loads(path.read_text()) if path.exists() else None
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "records": records, "runs": runs,
            "cache": cache, "root": root, "data_root": data_root, "connections": listener.connections}


def accuracies(grid, method: str) -> list[float]:
    return grid["records"][method]["metrics"]["session_acc"]


def chance_bound(session: int) -> float:
    """Three times chance: a guess that knows nothing stays below it (600 to 1,000 images a session)."""
    return 3 / (60 + 5 * session)


def failure(grid, method: str) -> dict:
    record = grid["records"][method]
    assert record is not None and record["status"] == "failed", record and record["status"]
    return record["error"]


def test_the_honest_method_completes_and_every_record_names_its_isolation(grid):
    level, _ = resolve_isolation("auto")
    record = grid["records"][HONEST]
    assert record["status"] == "completed"
    assert 2 / 60 < accuracies(grid, HONEST)[0] < 0.5  # learns something, as in test_cli
    for method in GRID:
        assert grid["records"][method]["isolation"]["level"] == level, method
        assert grid["records"][method]["isolation"]["limits"]["memory_bytes"] == 2 << 30
    seeds = record["evaluation_order"]["seeds"]
    assert len(seeds) == 9 and len(set(seeds)) == 9 and not record["evaluation_order"]["replayed"]
    assert f"{len(GRID) - MISBEHAVING} of {len(GRID)} runs complete" in grid["out"]  # the three that misbehave failed, alone
    assert grid["code"] == 1


def test_labels_read_from_the_evaluation_order_score_at_chance(grid):
    acc = accuracies(grid, "attack-order")
    assert all(a < chance_bound(t) for t, a in enumerate(acc)), acc


def test_the_order_attack_is_real_against_a_sorted_order(grid, monkeypatch):
    """The same plugin, shown the test set in stored order, is perfect."""
    bench = get_benchmark(BENCH).load(LoadOptions(cache_dir=grid["cache"], log=lambda m: None))
    monkeypatch.setattr(evaluation_order, "permutation", lambda seed, n: np.arange(n))
    result = run_method(bench, MethodRef("attack-order", file=str(PLUGINS / "attack_order.py")), "quick", 0,
                        RunOptions(cache_dir=grid["cache"], log=lambda m: None, isolation="none"))
    assert result.metrics["session_acc"] == [1.0] * 9


def test_labels_looked_for_in_the_interpreter_are_not_there(grid):
    record = grid["records"]["attack-interpreter"]
    assert record["extra"]["found"] == [[False, False]] * 9  # stack frames, gc, module globals: nothing
    assert all(a < chance_bound(t) for t, a in enumerate(accuracies(grid, "attack-interpreter")))


def test_the_interpreter_attack_is_real_in_the_runners_process(grid):
    bench = get_benchmark(BENCH).load(LoadOptions(cache_dir=grid["cache"], log=lambda m: None))
    result = run_method(bench, MethodRef("attack-interpreter", file=str(PLUGINS / "attack_interpreter.py")), "quick", 0,
                        RunOptions(cache_dir=grid["cache"], log=lambda m: None, isolation="none"))
    assert result.isolation["level"] == "none"
    assert result.metrics["session_acc"] == [1.0] * 9


@needs_sandbox
def test_the_dataset_cache_the_data_root_and_the_results_cannot_be_read(grid):
    record = grid["records"]["attack-files"]
    reads = record["extra"]["reads"]
    datasets = str(grid["cache"] / "datasets")
    assert reads[datasets] == "listed 0 entries"  # an empty folder covers the cache
    assert reads[str(grid["data_root"])] == "listed 0 entries"
    assert reads[str(grid["runs"])] == "listed 0 entries"
    assert not any(v.startswith(("read", "stole")) for v in reads.values()), reads
    assert all(a < chance_bound(t) for t, a in enumerate(accuracies(grid, "attack-files")))


@needs_sandbox
def test_nothing_is_written_outside_the_scratch_folder(grid):
    writes = grid["records"]["attack-write"]["extra"]["writes"]
    assert [v for k, v in writes.items() if k.endswith("scratch.txt")] == ["written"]
    for folder in (grid["runs"], grid["data_root"]):  # hidden folders: read-only inside the sandbox too
        assert writes[str(folder / "vandal.txt")].startswith("denied"), writes
    for folder in (grid["runs"], grid["cache"], grid["root"], grid["data_root"]):  # nothing reached the host
        assert not (folder / "vandal.txt").exists()
    assert not any(k.endswith("record.json") for k in writes)  # the records it aimed at are out of sight
    assert grid["records"][HONEST]["status"] == "completed"  # written before the attack ran, intact


@needs_sandbox
def test_no_network_connection_gets_out(grid):
    assert grid["records"]["attack-network"]["extra"]["connect"].startswith("failed")
    assert grid["connections"] == 0


def test_a_plugin_that_hangs_on_import_is_one_error_line(grid):
    lines = [line for line in grid["err"].splitlines() if "hang_import.py" in line]
    assert lines == [f"error: plugin file {PLUGINS / 'hang_import.py'} did not finish importing within 5 s (the load time limit)"]


@pytest.mark.parametrize("method, how", [("segfault", "killed by signal SIGSEGV"), ("exits", "exit status 3")])
def test_a_worker_that_dies_is_recorded_with_how(grid, method, how):
    error = failure(grid, method)
    assert (error["type"], error["session"]) == ("WorkerDied", 1)
    assert error["message"] == f"session 1: the worker died during fit_session ({how})"
    assert grid["records"][method]["sessions_done"] == 1  # session 0 was evaluated and kept


def test_unbounded_allocation_stops_at_the_memory_limit(grid):
    error = failure(grid, "hog")
    assert (error["type"], error["session"]) == ("MemoryError", 1)
    assert error["message"] == "out of memory (memory limit 2 GiB per worker)"


def test_isolation_none_is_recorded_and_marked_in_the_report(grid, tmp_path):
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", "-b", BENCH, "--cache-dir", str(grid["cache"]), "-o", str(runs), "--isolation", "none",
                     "--plugin", str(REPO / "examples" / "nearest_mean_pixels.py"), "--methods", HONEST]) == 0
        assert main(["report", "--runs", str(runs), "--output", str(reports)]) == 0
    record = json.loads((runs / f"{BENCH}@1" / HONEST / "quick" / "seed-0" / "record.json").read_text())
    assert record["isolation"] == {"level": "none", "limits": None}
    assert record["metrics"]["session_acc"] == accuracies(grid, HONEST)  # the same as in its sandboxed worker
    row = next(line for line in (reports / f"{BENCH}-v1.md").read_text().splitlines() if line.startswith(f"| {HONEST}"))
    assert "isolation: none (in the runner's process)" in row
    assert "none (in the runner's process)" in (reports / f"{BENCH}-v1.csv").read_text()


# ------------------------------------------------------------------------------------------
# Determinism and the hidden order, through the Python API
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    level, _ = resolve_isolation("auto")
    cache = tmp_path_factory.mktemp("cache")
    with WorkerPool(level, cache, readable=sorted(PLUGINS.glob("*.py"))) as shared:
        yield shared, cache


def prototype_run(bench, options: RunOptions, method=None):
    return run_method(bench, method or MethodRef("prototype", module="fscil_bench.baselines.prototype", attr="Prototype"),
                      "smoke", 0, options)


def test_the_same_seed_gives_the_same_predictions_isolated_or_in_process(pool, synthetic_benchmark):
    shared, cache = pool
    isolated = prototype_run(synthetic_benchmark, RunOptions(cache_dir=cache, log=lambda m: None, pool=shared))
    assert isolated.status == "completed" and isolated.isolation["level"] == shared.level
    seeds = isolated.evaluation_order["seeds"]
    replayed = prototype_run(synthetic_benchmark, RunOptions(cache_dir=cache, log=lambda m: None, isolation="none",
                                                             order_seeds=seeds))
    assert replayed.evaluation_order["seeds"] == seeds and replayed.evaluation_order["replayed"]
    for a, b in zip(isolated.predictions, replayed.predictions, strict=True):
        np.testing.assert_array_equal(a, b)
    assert isolated.diagnostics["sessions"] == replayed.diagnostics["sessions"]  # the same features, bit for bit
    # A method whose answers do not depend on the batch gives the same predictions in any order.
    fresh = prototype_run(synthetic_benchmark, RunOptions(cache_dir=cache, log=lambda m: None, isolation="none"))
    assert fresh.evaluation_order["seeds"] != seeds
    for a, b in zip(isolated.predictions, fresh.predictions, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_order_is_new_for_every_run_and_session(pool, synthetic_benchmark):
    shared, cache = pool
    runs = [run_method(synthetic_benchmark, MethodRef(HONEST, file=str(REPO / "examples" / "nearest_mean_pixels.py")),
                       "quick", 0, RunOptions(cache_dir=cache, log=lambda m: None, pool=shared)) for _ in range(2)]
    first, second = (r.evaluation_order["seeds"] for r in runs)
    assert len(set(first + second)) == 2 * len(synthetic_benchmark.schedule)  # not derived from the run seed
    n = int((synthetic_benchmark.test.labels < synthetic_benchmark.schedule.num_seen(0)).sum())
    shown = evaluation_order.permutation(first[0], n)
    first_batch = synthetic_benchmark.test.labels[shown[:8]]
    assert len(set(first_batch.tolist())) > 1  # a batch mixes classes
    np.testing.assert_array_equal(runs[0].predictions[0], runs[1].predictions[0])  # yet the answers agree


def test_a_hang_in_fit_session_is_stopped_at_the_time_limit(pool, synthetic_benchmark):
    shared, cache = pool
    result = run_method(synthetic_benchmark, MethodRef("hang-fit", file=str(PLUGINS / "misbehave.py")), "quick", 0,
                        RunOptions(cache_dir=cache, log=lambda m: None, pool=shared, limits=Limits(3, 60, None)))
    assert (result.status, result.error["type"], result.error["session"]) == ("failed", "TimeLimitExceeded", 1)
    assert result.error["message"] == "session 1: fit_session ran past the session time limit of 3 s; the worker was stopped"
    assert len(result.predictions) == 1 and result.isolation["limits"]["session_seconds"] == 3


def test_a_hang_on_import_in_a_run_is_stopped_at_the_load_limit(pool, synthetic_benchmark):
    shared, cache = pool
    result = run_method(synthetic_benchmark, MethodRef("never", file=str(PLUGINS / "hang_import.py")), "quick", 0,
                        RunOptions(cache_dir=cache, log=lambda m: None, pool=shared, limits=Limits(60, 3, None)))
    assert (result.status, result.error["type"], result.error["session"]) == ("failed", "TimeLimitExceeded", 0)
    assert result.error["message"] == "session 0: loading the method ran past the load time limit of 3 s; the worker was stopped"


def test_the_feature_memo_lives_through_the_run_in_the_worker(pool, synthetic_benchmark):
    shared, cache = pool
    result = prototype_run(synthetic_benchmark, RunOptions(cache_dir=cache, log=lambda m: None, pool=shared),
                           MethodRef("memo-probe", file=str(PLUGINS / "memo_probe.py")))
    assert result.status == "completed", result.error
    seen = [int((synthetic_benchmark.test.labels < synthetic_benchmark.schedule.num_seen(t)).sum())
            for t in range(len(synthetic_benchmark.schedule))]
    assert result.extra["memo_sizes"] == [0] + seen[:-1]  # at each fit: every test image evaluated before
