"""Every leaderboard column against values computed by hand from a small record set.

The toy benchmark of ``test_report``: classes 0-1 arrive in session 0 (10 test samples), class 2
in session 1 and class 3 in session 2 (5 each). A run is given as the number of correctly
predicted test samples of each class group after each session, so every metric below is
worked out by hand from those counts (the working is in the comments), independently of the
metric code. The set holds three seeds of one preset (one of them without an NC1 value and
without a wall time), a row with a single seed, and a second preset of the same method.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from test_report import GROUPS, LABELS, fake_record, md_header, md_row, put

from fscil_bench.metrics.descriptors import summarize
from fscil_bench.reporting.collect import collect
from fscil_bench.reporting.report import write_reports
from fscil_bench.reporting.tables import build_table, to_frame
from fscil_bench.results.store import ResultsStore

SIZES = [10, 5, 5]  # test samples per class group


def predictions(correct: list[list[int]]) -> list[np.ndarray]:
    """``correct[t][g]`` of group ``g``'s test samples right after session ``t``, the rest wrong."""
    preds = []
    for t, (_, stop) in enumerate(GROUPS):
        y = LABELS[LABELS < stop]
        p = (y + 1) % stop
        start = 0
        for g, size in enumerate(SIZES[: t + 1]):
            p[start:start + correct[t][g]] = y[start:start + correct[t][g]]
            start += size
        preds.append(p.astype(np.int16))
    return preds


def diagnostics(nc1: float | None, equiang: float, align: float) -> dict:
    """The stored diagnostics, with the given values after the last session."""
    sessions = [{"nc1": 9.0, "equinorm": 0.1, "equiangularity": 9.0, "self_duality": None, "alignment": [9.0]}] * 2
    last = {"nc1": nc1, "equinorm": 0.1, "equiangularity": equiang, "self_duality": None, "alignment": [align, 0.5]}
    return {"sessions": sessions + [last], "seconds": [0.1] * 3}


# Per run: correct counts, then the hand-worked value of every column (fractions; None: no value).
RUNS = {
    ("m", "quick", 0): ([[8], [10, 4], [6, 2, 5]], diagnostics(0.2, 0.3, 0.9), 10.0, {
        "A0": 8 / 10, "A1": 14 / 15, "A2": 13 / 20,
        "Avg": (8 / 10 + 14 / 15 + 13 / 20) / 3, "Last": 13 / 20, "PD": 8 / 10 - 13 / 20,
        "Base (last)": 6 / 10, "Novel (last)": (2 + 5) / 10, "HM (last)": 2 * 0.6 * 0.7 / (0.6 + 0.7),
        # max-based: group 0 peaked at 10/10 (session 1), ends at 6/10; group 1: 4/5 -> 2/5
        "Forget (max)": ((1.0 - 0.6) + (0.8 - 0.4)) / 2,
        # initial-based: group 0 started at 8/10; group 1 at 4/5
        "Forget (init)": ((0.8 - 0.6) + (0.8 - 0.4)) / 2,
        "NC1 (last)": 0.2, "Equiang. (last)": 0.3, "Align base (last)": 0.9, "Time (s)": 10.0}),
    ("m", "quick", 1): ([[10], [7, 5], [5, 3, 2]], diagnostics(0.4, 0.5, 0.7), 14.0, {
        "A0": 1.0, "A1": 12 / 15, "A2": 10 / 20,
        "Avg": (1.0 + 12 / 15 + 10 / 20) / 3, "Last": 0.5, "PD": 1.0 - 0.5,
        "Base (last)": 5 / 10, "Novel (last)": 5 / 10, "HM (last)": 0.5,
        "Forget (max)": ((1.0 - 0.5) + (1.0 - 0.6)) / 2, "Forget (init)": ((1.0 - 0.5) + (1.0 - 0.6)) / 2,
        "NC1 (last)": 0.4, "Equiang. (last)": 0.5, "Align base (last)": 0.7, "Time (s)": 14.0}),
    # The seed with missing values: no NC1 after the last session, no wall time in its record.
    ("m", "quick", 2): ([[9], [9, 0], [9, 0, 0]], diagnostics(None, 0.4, 0.8), None, {
        "A0": 0.9, "A1": 9 / 15, "A2": 9 / 20,
        "Avg": (0.9 + 0.6 + 0.45) / 3, "Last": 0.45, "PD": 0.9 - 0.45,
        "Base (last)": 0.9, "Novel (last)": 0.0, "HM (last)": 0.0,  # 2ab/(a+b) with b = 0
        "Forget (max)": 0.0, "Forget (init)": 0.0,
        "NC1 (last)": None, "Equiang. (last)": 0.4, "Align base (last)": 0.8, "Time (s)": None}),
    # n = 1.
    ("single", "quick", 0): ([[10], [10, 5], [10, 5, 5]], diagnostics(0.1, 0.2, 1.0), 3.0, {
        "A0": 1.0, "A1": 1.0, "A2": 1.0, "Avg": 1.0, "Last": 1.0, "PD": 0.0,
        "Base (last)": 1.0, "Novel (last)": 1.0, "HM (last)": 1.0, "Forget (max)": 0.0, "Forget (init)": 0.0,
        "NC1 (last)": 0.1, "Equiang. (last)": 0.2, "Align base (last)": 1.0, "Time (s)": 3.0}),
    # Another preset of method m: its own row, never mixed with m [quick].
    ("m", "paper", 0): ([[5], [5, 1], [0, 1, 4]], diagnostics(0.6, 0.7, 0.1), 99.0, {
        "A0": 0.5, "A1": 6 / 15, "A2": 5 / 20,
        "Avg": (0.5 + 0.4 + 0.25) / 3, "Last": 0.25, "PD": 0.5 - 0.25,
        "Base (last)": 0.0, "Novel (last)": 5 / 10, "HM (last)": 0.0,
        "Forget (max)": ((0.5 - 0.0) + (0.2 - 0.2)) / 2, "Forget (init)": ((0.5 - 0.0) + (0.2 - 0.2)) / 2,
        "NC1 (last)": 0.6, "Equiang. (last)": 0.7, "Align base (last)": 0.1, "Time (s)": 99.0}),
}
PERCENT = ["A0", "A1", "A2", "Avg", "Last", "PD", "Base (last)", "Novel (last)", "HM (last)", "Forget (max)",
           "Forget (init)"]
NUMBER = ["NC1 (last)", "Equiang. (last)", "Align base (last)"]
COLUMNS = PERCENT + NUMBER + ["Time (s)"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ResultsStore:
    store = ResultsStore(tmp_path_factory.mktemp("columns") / "runs")
    for (method, preset, seed), (correct, diag, seconds, _) in RUNS.items():
        rec, _ = fake_record(method, seed, [0, 0, 0], diagnostics=diag)
        preds = predictions(correct)
        rec["preset"] = preset
        rec["metrics"] = summarize([LABELS[LABELS < stop] for _, stop in GROUPS], preds, GROUPS)
        if seconds is None:
            del rec["timing"]["total_seconds"]
        else:
            rec["timing"]["total_seconds"] = seconds
        put(store, rec, preds)
    return store


def expected(method: str, preset: str, column: str) -> tuple[float, float, int]:
    """Mean, sample std (NaN for fewer than two values) and count of a column's per-seed values."""
    scale = 100.0 if column in PERCENT else 1.0
    values = [scale * v[column] for (m, p, _), (*_, v) in RUNS.items() if (m, p) == (method, preset)
              and v[column] is not None]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan"), len(values)


def expected_text(method: str, preset: str, column: str) -> str:
    mean, std, n = expected(method, preset, column)
    if column in NUMBER:
        return f"{mean:.3f}"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


ROWS = [("m", "quick"), ("single", "quick"), ("m", "paper")]


def test_every_column_is_one_this_test_checks(store):
    table = build_table(collect(store)["toy@1"], [])
    assert [c.title for c in table.columns] == COLUMNS


@pytest.mark.parametrize("method, preset", ROWS)
def test_every_cell_holds_the_hand_computed_mean_and_std(store, method, preset):
    table = build_table(collect(store)["toy@1"], [])
    row = next(r for r in table.measured if (r.method, r.preset) == (method, preset))
    assert row.n == sum((m, p) == (method, preset) for m, p, _ in RUNS)
    for column in table.columns:
        mean, std, n = expected(method, preset, column.title)
        cell = row.cells[column.key]
        assert cell.mean == pytest.approx(mean, abs=1e-9), column.title
        assert cell.n == n, column.title
        if n > 1:
            assert cell.std == pytest.approx(std, abs=1e-9), column.title
        else:
            assert np.isnan(cell.std), column.title  # no spread from one value
    csv = to_frame(table)
    line = csv[(csv.method == method) & (csv.preset == preset)].iloc[0]
    for title in COLUMNS:
        assert line[f"{title} mean"] == pytest.approx(round(expected(method, preset, title)[0], 4), abs=1e-9), title


def test_the_markdown_shows_each_cell_as_computed_by_hand(store, tmp_path, monkeypatch):
    monkeypatch.setattr("fscil_bench.reporting.report._figures", lambda *args: [])  # the table is what counts here
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    header = md_header(md)
    for method, preset in ROWS:
        line = next(line for line in md.splitlines() if line.startswith(f"| {method} ") and f"| {preset} " in line)
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        assert cells[2] == str(sum((m, p) == (method, preset) for m, p, _ in RUNS))
        for title in COLUMNS:
            assert cells[header.index(title)] == expected_text(method, preset, title), (method, preset, title)
    notes = md_row(md, "single")[header.index("Notes")]
    assert "missing: seed 1, seed 2" in notes  # the other quick row has them; the paper row is apart
    assert "missing" not in [line for line in md.splitlines() if "| paper " in line][0]
