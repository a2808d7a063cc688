"""The leaderboard over seeds, splits and orders: standard cells, spreads by source, ties, cost, compare."""

import csv

import pytest

from fscil_bench.cli import main
from fscil_bench.reporting.compare import CompareError, compare_methods
from fscil_bench.reporting.report import write_reports
from fscil_bench.results.store import ResultsStore, RunKey
from test_report import LABELS, cell, fake_record, md_row, no_plots  # noqa: F401 - fixture

PEAK = {"device": "cpu", "kind": "rss_peak", "bytes": 3 * 1024**2, "start_bytes": 10}
DECLARED = {"declared": True, "exemplars": 0, "feature_vectors": 4, "bytes": 2 * 1024**2, "notes": ""}


def put(store: ResultsStore, method: str, seed: int, split: int, last_correct: int, bench: str = "toy@1") -> None:
    """A run whose last session has ``last_correct`` of 20 test samples right (sessions 0, 1: 10/10 and 15/15)."""
    rec, preds = fake_record(method, seed, [10, 15, last_correct], bench=bench)
    rec.update(split=split, order=0, peak_memory=PEAK, memory=DECLARED)
    store.write(RunKey(bench, method, "quick", seed, split), rec, preds, LABELS)


def fill(store: ResultsStore) -> None:
    """a: 14 + 2 seed + split; b: four fewer in every run; c: a + (0, +1, -1, -1), seeds 0-1 x splits 0-1."""
    for seed in (0, 1):
        for split in (0, 1):
            base = 14 + 2 * seed + split
            put(store, "a", seed, split, base)
            put(store, "b", seed, split, base - 4)
            put(store, "c", seed, split, base + (0, 1, -1, -1)[2 * seed + split])


def table_rows(md: str, title: str) -> dict[str, list[str]]:
    section = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {row[0]: dict(zip(header, row)) for row in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


def test_cells_cover_the_standard_split_and_the_side_tables_every_run(tmp_path, no_plots):  # noqa: F811
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    # Main table: split 0 only, seeds 0 and 1 -> last 14/20 and 16/20.
    assert md_row(md, "a")[2] == "2" and cell(md, "a", "A2") == "**75.00 ± 7.07**"
    variance = table_rows(md, "Sources of variance")
    assert variance["a"]["Runs"] == "4 runs: 2 seeds x 2 splits x 1 order"
    assert variance["a"]["Last mean"] == "77.50"  # (14 + 15 + 16 + 17) / 4 / 20
    assert variance["a"]["Last seed sd (n)"] == "7.07 (2)"  # sd(14, 16) / 20 at either split
    assert variance["a"]["Last split sd (n)"] == "3.54 (2)"  # sd(14, 15) / 20 at either seed
    assert variance["a"]["Last order sd (n)"] == ""  # one order: no spread to measure
    assert variance["a"]["Last total sd (n)"] == "6.45 (4)"
    # Whether the ranking flips: a is the best at split 0; c ties it at split 1 (16/20 on average each).
    assert ("Best by Last at each split and order (mean over seeds; ranked rows: not oracle, "
            "protocol-clean): split 0 order 0: a [quick]; "
            "split 1 order 0: a [quick] = c [quick]; a [quick] is best or tied best in 2 of 2.") in md
    # The whole ranking: c is second alone at split 0 (14.5 against b's 11), tied first at split 1.
    assert ("Top 5 by Last at each split and order (mean over seeds; ranked rows): "
            "split 0 order 0: a [quick] > c [quick] > b [quick]; "
            "split 1 order 0: a [quick] = c [quick] > b [quick]; 2 different rankings among 2.") in md
    # a is the best; c's differences (0, +1, -1, -1) / 20 are not significant; b's -4 / 20 are.
    paired = table_rows(md, "Paired comparisons with the best")
    assert paired["a"]["Δ Last"] == "reference" and paired["a"]["≈ best (Last)"] == "best"
    assert paired["b"]["Δ Last"] == "-20.00" and paired["b"]["Last shared runs"] == "4"
    assert paired["b"]["Last 95% CI (runs)"] == "[-20.00, -20.00]" and paired["b"]["≈ best (Last)"] == "no"
    assert paired["c"]["Δ Last"] == "-1.25" and paired["c"]["≈ best (Last)"] == "yes"
    assert cell(md, "b", "≈ best (Last)") == "no" and cell(md, "c", "≈ best (Avg)") == "yes"
    cost = table_rows(md, "Cost")
    assert cost["a"]["Peak memory (MiB)"] == "3.0" and cost["a"]["Declared memory (MiB)"] == "2.00"
    assert cost["a"]["Device"] == "cpu" and cost["a"]["Runs"] == "4" and cost["a"]["Train (s)"] == "1.2"
    with open(tmp_path / "lb" / "toy-v1.csv", newline="") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    for column in ("Last split sd", "Last seed levels", "Last - best", "Last CI runs low", "Last CI images high",
                   "peak memory MiB", "declared memory MiB", "≈ best (Last)"):
        assert column in rows["a"]
    row_b = rows["b"]
    assert row_b["Last - best"] == "-20.0000" and row_b["≈ best (Last)"] == "no"
    html = (tmp_path / "lb" / "toy-v1.html").read_text()
    assert 'id="variance"' in html and 'id="paired"' in html and 'id="cost"' in html


def test_without_other_splits_or_orders_there_is_no_variance_table_and_missing_runs_are_named(tmp_path, no_plots):  # noqa: F811
    store = ResultsStore(tmp_path / "runs")
    put(store, "a", 0, 0, 14)
    put(store, "b", 0, 0, 10)
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    assert "## Sources of variance" not in md and "## Cost" in md
    # One shared run: the tie is decided by the bootstrap over its test images (4 of 20 images differ).
    assert table_rows(md, "Paired comparisons with the best")["b"]["Last shared runs"] == "1"
    put(store, "a", 0, 2, 14)  # a split that b lacks
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    assert "missing: seed 0 split 2" in cell(md, "b", "Notes")
    assert md_row(md, "b")[2] == "1"
    put(store, "d", 0, 3, 12)  # a row with no run on the standard split: said so, not an empty row
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    assert "no run on the standard split and order; 1 other runs" in cell(md, "d", "Notes")


def test_compare_prints_per_run_and_overall_intervals(tmp_path, capsys):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    assert main(["compare", "a", "b", "--runs", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "toy@1: b [quick] minus a [quick], points of accuracy, over 4 shared runs" in out
    assert "seed 1 split 1" in out
    assert "Δ Last over the 4 runs: -20.00, 95% CI [-20.00, -20.00]" in out
    assert "-> b [quick] is lower than a [quick] at 95% (paired t over runs)" in out
    assert main(["compare", "a", "c", "--runs", str(store.root)]) == 0
    assert "Δ Last over the 4 runs: -1.25" in capsys.readouterr().out
    assert main(["compare", "a", "b", "--runs", str(store.root), "--seeds", "0", "--splits", "0"]) == 0
    out = capsys.readouterr().out
    assert "over 1 shared run " in out and "(bootstrap over test images)" in out


def test_compare_errors_are_one_line(tmp_path, capsys):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    put(store, "a", 0, 0, 12, bench="other@1")
    put(store, "b", 0, 0, 12, bench="other@1")
    assert main(["compare", "a", "nope", "--runs", str(store.root)]) == 2
    assert "error: no runs of both 'a' and 'nope' on any benchmark" in capsys.readouterr().err
    assert main(["compare", "a", "b", "--runs", str(store.root)]) == 2
    assert "choose one with --benchmark" in capsys.readouterr().err
    assert main(["compare", "a", "b", "--runs", str(store.root), "-b", "other", "--splits", "5"]) == 2
    assert "share no completed run" in capsys.readouterr().err
    with pytest.raises(CompareError, match="no runs of both"):
        compare_methods(store, "a:paper", "b", benchmark="toy")
    assert main(["compare", "a", "b", "--runs", str(tmp_path / "none")]) == 2
