
import numpy as np
import pytest

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
