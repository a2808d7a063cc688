import numpy as np

from fscil_bench.metrics import summarize
from fscil_bench.report import write_reports
from fscil_bench.store import SCHEMA_VERSION, ResultsStore, RunKey

GROUPS = [(0, 2), (2, 3), (3, 4)]


def fake_record(method: str, seed: int, correct: list[int], status: str = "completed") -> tuple[dict, list]:
    """Each session: `correct[t]` of the first samples right, the rest wrong."""
    labels = np.repeat(np.arange(4), 5)
    per_session, preds = [], []
    for t, (_, stop) in enumerate(GROUPS):
        y = labels[labels < stop]
        p = y.copy()
        p[correct[t]:] = (p[correct[t]:] + 1) % stop
        per_session.append(y)
        preds.append(p.astype(np.int16))
    rec = {"schema_version": SCHEMA_VERSION, "status": status, "benchmark": {"id": "toy@1"},
           "method": {"name": method, "oracle": False, "extra_data": None}, "preset": "quick", "seed": seed,
           "timing": {"total_seconds": 1.5}, "metrics": summarize(per_session, preds, GROUPS) if status == "completed" else None,
           "error": None if status == "completed" else {"type": "RuntimeError", "session": 1}}
    return rec, preds


def fill(store: ResultsStore) -> None:
    for method, seed, correct, status in [("a", 0, [10, 12, 15], "completed"), ("a", 1, [8, 12, 10], "completed"),
                                          ("b", 0, [10, 5, 5], "completed"), ("b", 1, [0, 0, 0], "failed")]:
        rec, preds = fake_record(method, seed, correct, status)
        store.write(RunKey("toy@1", method, "quick", seed), rec, preds, np.repeat(np.arange(4), 5))


def test_report_is_byte_identical_for_the_same_records(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    first = [p.read_bytes() for p in write_reports(store, tmp_path / "lb1")]
    second = [p.read_bytes() for p in write_reports(store, tmp_path / "lb2")]
    assert first == second and len(first) == 2


def test_report_aggregates_seeds_and_shows_failures(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    row_a = next(line for line in md.splitlines() if line.startswith("| a "))
    row_b = next(line for line in md.splitlines() if line.startswith("| b "))
    # Method a, session 0: 10/10 and 8/10 correct -> 90.00 ± 14.14 over n = 2.
    assert "| 2 " in row_a and "90.00 ± 14.14" in row_a
    # Method b: one seed completed, one failed: n = 1 and the failure is named, not dropped.
    assert "| 1 " in row_b and "failed: seed 1 (RuntimeError in session 1)" in row_b
    csv = (tmp_path / "lb" / "toy-v1.csv").read_text().splitlines()
    assert csv[0].startswith("method,preset,n,seeds,failed,notes,S0 mean,S0 std")
    assert any(line.startswith("b,quick,1,0,seed 1: RuntimeError in session 1") for line in csv)
