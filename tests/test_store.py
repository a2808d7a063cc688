"""The results store: records, predictions, and what counts as a complete run."""

import json

import numpy as np
import pytest

from conftest import make_synthetic_benchmark

from fscil_bench.benchmarks.benchmark import BenchmarkSpec
from fscil_bench.metrics.descriptors import summarize
from fscil_bench.results.store import ResultsStore, RunKey, StoreError


def test_record_round_trip_and_completion(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    key = RunKey("b@1", "m", "quick", 3)
    assert not store.is_complete(key)
    preds = [np.array([0, 1, 1], dtype=np.int16), np.array([0, 1, 2, 2], dtype=np.int16)]
    path = store.write(key, {"schema_version": 1, "status": "completed", "value": 0.5}, preds, np.array([0, 1, 2, 3]))
    assert path == tmp_path / "runs" / "b@1" / "m" / "quick" / "seed-3" / "record.json"
    assert store.is_complete(key)
    rec = store.read(key)
    assert rec["value"] == 0.5 and len(rec["predictions"]["sha256"]) == 64
    saved = store.predictions(path)
    assert np.array_equal(saved["session_1"], preds[1]) and np.array_equal(saved["test_labels"], [0, 1, 2, 3])
    assert [p for p, _ in store.records()] == [path]


def test_failed_and_unreadable_records_are_not_complete(tmp_path):
    store = ResultsStore(tmp_path)
    key = RunKey("b@1", "m", "quick", 0)
    store.write(key, {"schema_version": 1, "status": "failed"}, [], np.array([0]))
    assert not store.is_complete(key)
    (store.run_dir(key) / "record.json").write_text("{not json")
    assert not store.is_complete(key)


def test_no_temporary_files_are_left_behind(tmp_path):
    store = ResultsStore(tmp_path)
    store.write(RunKey("b@1", "m", "quick", 0), {"schema_version": 1, "status": "completed"}, [np.zeros(2, np.int16)], np.zeros(2))
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == []


def test_nan_never_reaches_json(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(ValueError):
        store.write(RunKey("b@1", "m", "quick", 0), {"x": float("nan")}, [], np.zeros(1))


def test_unwritable_root_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=f"cannot write results to {blocker}/runs"):
        ResultsStore(blocker / "runs").check_writable()


def test_an_unreadable_record_is_reported_not_dropped_silently(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    good = store.write(RunKey("b@1", "m", "quick", 0), {"schema_version": 1, "status": "completed"}, [np.zeros(2, np.int16)], np.zeros(2))
    bad = store.write(RunKey("b@1", "m", "quick", 1), {"schema_version": 1, "status": "completed"}, [np.zeros(2, np.int16)], np.zeros(2))
    bad.write_text('{"schema_version": 1, "sta')  # damaged by hand
    assert [p for p, _ in store.records()] == [good]
    err = capsys.readouterr().err
    assert f"warning: skipped unreadable record {bad}" in err and "JSONDecodeError" in err
    seen = []
    assert [p for p, _ in store.records(on_unreadable=lambda path, reason: seen.append(path))] == [good]
    assert seen == [bad]


def _completed(store: ResultsStore, key: RunKey, preds=None) -> None:
    preds = [np.array([0, 1, 1], dtype=np.int16)] if preds is None else preds
    store.write(key, {"schema_version": 2, "status": "completed"}, preds, np.array([0, 1, 2]))


@pytest.mark.parametrize("damage", ["missing", "flipped", "truncated", "no-sidecar", "another-run", "no-checksum"])
def test_a_record_is_complete_only_with_the_predictions_it_names(tmp_path, damage):
    store = ResultsStore(tmp_path)
    key, other = RunKey("b@1", "m", "quick", 0), RunKey("b@1", "m", "quick", 1)
    _completed(store, key)
    _completed(store, other, [np.array([2, 2, 2], dtype=np.int16)])
    assert store.is_complete(key) and store.is_complete(other)
    folder = store.run_dir(key)
    npz = folder / "predictions.npz"
    if damage == "missing":
        npz.unlink()
    elif damage == "flipped":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    elif damage == "truncated":
        npz.write_bytes(npz.read_bytes()[:50])
    elif damage == "no-sidecar":
        (folder / "predictions.npz.sha256").unlink()
    elif damage == "another-run":  # a valid checked entry, but not the one this record names
        for name in ("predictions.npz", "predictions.npz.sha256"):
            (folder / name).write_bytes((store.run_dir(other) / name).read_bytes())
    else:
        record = json.loads((folder / "record.json").read_text())
        del record["predictions"]
        (folder / "record.json").write_text(json.dumps(record))
    assert not store.is_complete(key)
    assert store.is_complete(other)
    path = folder / "record.json"
    assert store.predictions(path, json.loads(path.read_text())) is None  # the report refuses it too


def test_an_incomplete_run_is_redone_by_the_next_run_and_a_complete_one_skipped(tmp_path, monkeypatch, capsys):
    """The grid asks ``is_complete``: a run whose predictions were lost runs again; the others do not."""
    from fscil_bench.run import grid

    ran = []

    def fake_run(bench, method_cls, preset, seed, options, overrides=None):
        ran.append(seed)
        preds = [np.full(int((bench.test.labels < bench.schedule.num_seen(t)).sum()), 0, np.int16)
                 for t in range(len(bench.schedule))]
        labels = [bench.test.labels[bench.test.labels < bench.schedule.num_seen(t)] for t in range(len(preds))]
        return grid.RunResult("completed", {}, preds, bench.test.labels, summarize(labels, preds, bench.schedule.class_groups()),
                              {"total_seconds": 0.0}, {}, {}, sessions_done=len(preds))

    from fscil_bench.run.methods import discover

    bench = make_synthetic_benchmark()
    spec = BenchmarkSpec("synthetic", 1, "synthetic", "test", lambda options: bench)
    monkeypatch.setattr(grid, "get_benchmark", lambda name: spec)
    monkeypatch.setattr(grid, "run_method", fake_run)
    store = ResultsStore(tmp_path / "runs")

    def run() -> list[int]:
        ran.clear()
        grid.run_grid(["synthetic"], ["prototype"], [0, 1, 2], "smoke", discover(), store, grid.RunOptions(log=print), None,
                      echo=lambda m: None)
        return sorted(ran)

    assert run() == [0, 1, 2]
    assert run() == []
    (store.run_dir(RunKey("synthetic@1", "prototype", "smoke", 1)) / "predictions.npz").unlink()
    assert run() == [1]
    assert all(store.is_complete(RunKey("synthetic@1", "prototype", "smoke", s)) for s in (0, 1, 2))
