"""Leaderboard reports: aggregation, best marks, partial results, reported rows, plots, HTML."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fscil_bench import MethodBase
from fscil_bench.cli import main
from fscil_bench.metrics.descriptors import summarize
from fscil_bench.reporting.collect import collect
from fscil_bench.reporting.report import ReportError, write_reports
from fscil_bench.reporting.reported import DEFAULT_TOLERANCE, load_reported
from fscil_bench.results.store import SCHEMA_VERSION, ResultsStore, RunKey
from fscil_bench.run.grid import build_record
from fscil_bench.run.runner import run_method

GROUPS = [(0, 2), (2, 3), (3, 4)]
LABELS = np.repeat(np.arange(4), 5)


def fake_record(method: str, seed: int, correct: list[int], status: str = "completed", bench: str = "toy@1",
                family: str = "toy", oracle: bool = False, diagnostics=..., seconds: float = 1.5) -> tuple[dict, list]:
    """Each session: `correct[t]` of the first samples right, the rest wrong."""
    per_session, preds = [], []
    for t, (_, stop) in enumerate(GROUPS):
        y = LABELS[LABELS < stop]
        p = y.copy()
        p[correct[t]:] = (p[correct[t]:] + 1) % stop
        per_session.append(y)
        preds.append(p.astype(np.int16))
    rec = {"schema_version": SCHEMA_VERSION, "status": status,
           "benchmark": {"id": bench, "family": family, "class_groups": [list(g) for g in GROUPS]},
           "sessions_done": len(GROUPS) if status == "completed" else 1,
           "method": {"name": method, "oracle": oracle, "extra_data": None}, "preset": "quick", "seed": seed,
           "timing": {"total_seconds": seconds, "fit_seconds": [1.0, 0.1, 0.1], "eval_seconds": [0.1, 0.1, 0.1]},
           "metrics": summarize(per_session, preds, GROUPS) if status == "completed" else None,
           "error": None if status == "completed" else {"type": "RuntimeError", "session": 1},
           "started_at": f"2025-01-0{seed + 1}T10:00:00+00:00", "finished_at": f"2025-01-0{seed + 1}T10:05:00+00:00",
           "command": "fscil-bench run --seeds 0 1", "environment": {"fscil_bench": "0.1.0", "git_commit": "abc123"},
           "hardware": {"device": "cpu", "processor": "x86_64", "cpu_count": 2}}
    if diagnostics is not ...:
        rec["diagnostics"] = diagnostics
    return rec, preds


def put(store: ResultsStore, rec: dict, preds: list) -> None:
    key = RunKey(rec["benchmark"]["id"], rec["method"]["name"], rec["preset"], rec["seed"])
    store.write(key, rec, preds, LABELS)


def fill(store: ResultsStore) -> None:
    """a: 2 seeds; b: seed 0 done, seed 1 failed; c: seed 1 missing."""
    for method, seed, correct, status in [("a", 0, [10, 12, 15], "completed"), ("a", 1, [8, 12, 10], "completed"),
                                          ("b", 0, [10, 5, 5], "completed"), ("b", 1, [0, 0, 0], "failed"),
                                          ("c", 0, [9, 6, 6], "completed")]:
        put(store, *fake_record(method, seed, correct, status))


def diag(nc1: float, align0: float, equiang: float = 0.3) -> dict:
    """Three sessions of diagnostics; the last one has the given values."""
    sessions = [{"nc1": nc1 + 0.1 * (2 - t), "equinorm": 0.1, "equiangularity": equiang, "self_duality": None,
                 "alignment": [align0 + 0.05 * (2 - t)] + [0.5] * t} for t in range(3)]
    return {"sessions": sessions, "seconds": [0.1, 0.1, 0.1]}


@pytest.fixture
def no_plots(monkeypatch):
    """Skip drawing figures in tests about the table (drawing is the slow part; plots have their own tests)."""
    monkeypatch.setattr("fscil_bench.reporting.report._figures", lambda *args: [])


def md_row(md: str, method: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {method} "))
    return [c.strip() for c in line.strip("|").split("|")]


def md_header(md: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith("| Method"))
    return [c.strip() for c in line.strip("|").split("|")]


def cell(md: str, method: str, column: str) -> str:
    return md_row(md, method)[md_header(md).index(column)]


def test_markdown_and_csv_are_byte_identical_for_the_same_records(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    copy = ResultsStore(tmp_path / "elsewhere" / "copy")
    shutil.copytree(store.root, copy.root)

    def md_csv(s: ResultsStore, out: str) -> list[bytes]:
        written = write_reports(s, tmp_path / out, command="fscil-bench report")
        return [p.read_bytes() for p in written if p.suffix in (".md", ".csv")]

    first, second, third = md_csv(store, "lb1"), md_csv(store, "lb2"), md_csv(copy, "lb3")
    assert len(first) == 2 and first == second == third
    assert str(tmp_path).encode() not in first[0]  # no path of the store leaks into the report


def test_seeds_are_aggregated_and_failed_and_missing_seeds_are_shown(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    # Method a, session 0: 10/10 and 8/10 correct -> 90.00 ± 14.14 over n = 2.
    assert md_row(md, "a")[2] == "2" and cell(md, "a", "A0") == "90.00 ± 14.14"
    # b: one seed completed, one failed: n = 1 and the failure is named, not dropped.
    assert md_row(md, "b")[2] == "1" and "failed: seed 1 (RuntimeError in session 1)" in cell(md, "b", "Notes")
    # c has no record for seed 1, which a and b have: missing, not silently a smaller n.
    assert md_row(md, "c")[2] == "1" and "missing: seed 1" in cell(md, "c", "Notes")
    assert "missing" not in cell(md, "a", "Notes")
    csv = (tmp_path / "lb" / "toy-v1.csv").read_text().splitlines()
    assert csv[0].startswith("method,preset,kind,n,seeds,failed,missing,notes,source,A0 mean,A0 std")
    assert any(line.startswith("b,quick,measured,1,0,seed 1: RuntimeError in session 1,,") for line in csv)
    assert any(line.startswith("c,quick,measured,1,0,,seed 1,missing: seed 1; isolation: not recorded,") for line in csv)
    # The wall time is a column in every format.
    assert cell(md, "a", "Time (s)") == "1.50 ± 0.00"
    assert "Time (s) mean" in csv[0] and "Time (s)</th>" in (tmp_path / "lb" / "toy-v1.html").read_text()


def test_a_method_whose_every_seed_failed_keeps_its_row(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    put(store, *fake_record("a", 0, [10, 12, 15]))
    put(store, *fake_record("broken", 0, [0, 0, 0], status="failed"))
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    row = md_row(md, "broken")
    assert row[2] == "0" and cell(md, "broken", "Avg") == "" and "failed: seed 0" in cell(md, "broken", "Notes")


def test_best_value_of_each_column_is_bold_and_oracles_are_not_ranked(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    put(store, *fake_record("good", 0, [10, 13, 16]))
    put(store, *fake_record("weak", 0, [10, 8, 6]))
    put(store, *fake_record("joint", 0, [10, 15, 20], oracle=True))
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    # good: A_2 = 16/20 = 80%, weak: 30%; joint (oracle) 100% is shown but not bold.
    assert cell(md, "good", "A2") == "**80.00**" and cell(md, "weak", "A2") == "30.00"
    assert cell(md, "joint", "A2") == "100.00" and "oracle" in cell(md, "joint", "Notes")
    # Lower is better for PD: good 100 - 80 = 20 beats weak 100 - 30 = 70.
    assert cell(md, "good", "PD") == "**20.00**" and cell(md, "weak", "PD") == "70.00"
    # A tie at display precision marks both (A0 = 100% for both ranked rows).
    assert cell(md, "good", "A0") == cell(md, "weak", "A0") == "**100.00**"
    assert "**" not in cell(md, "good", "Time (s)")  # time is not ranked
    csv = (tmp_path / "lb" / "toy-v1.csv").read_text()
    assert re.search(r"^good,.*,A0 A1 A2 Avg Last PD ", csv, re.M)
    html = (tmp_path / "lb" / "toy-v1.html").read_text()
    assert html.count('class="best"') >= 6 and 'tr class="oracle"' in html


def test_reported_rows_are_apart_and_measured_minus_reported_passes_or_fails(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    put(store, *fake_record("a", 0, [10, 12, 15]))  # A = 100, 80, 75: avg 85, last 75
    put(store, *fake_record("b", 0, [10, 5, 5]))  # A = 100, 33.33, 25: avg 52.78, last 25
    reported = tmp_path / "reported.json"
    reported.write_text(json.dumps([
        {"benchmark": "toy", "method": "a", "preset": "quick", "source": "Paper A, Table 1", "accuracy": [99.0, 81.0, 74.0]},
        {"benchmark": "toy", "method": "b", "preset": "quick", "source": "Paper B", "accuracy": [100.0, 60.0, 50.0],
         "average": 70.0, "tolerance": 5.0},
        {"benchmark": "other", "method": "a", "preset": "quick", "source": "Elsewhere", "accuracy": [1.0, 1.0, 1.0]},
    ]))
    write_reports(store, tmp_path / "lb", reported_path=reported)
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    # a: last 75 - 74 = +1.00, avg 85 - 84.67 = +0.33: within 2.0 points.
    assert cell(md, "a", "Last − reported") == "+1.00" and cell(md, "a", "Avg − reported") == "+0.33"
    assert cell(md, "a", "Reproduced") == f"pass (±{DEFAULT_TOLERANCE:g})"
    # b: last 25 - 50 = -25.00: outside its own 5-point tolerance.
    assert cell(md, "b", "Last − reported") == "-25.00" and cell(md, "b", "Reproduced") == "fail (±5)"
    # Reported rows come after a "reported" separator, carry their source, and are never bold.
    lines = md.splitlines()
    sep = next(i for i, line in enumerate(lines) if line.startswith("| **reported**"))
    reported_rows = [line for line in lines[sep + 1:] if line.startswith("| *a*") or line.startswith("| *b*")]
    assert len(reported_rows) == 2 and all(line.startswith("| *") for line in lines[sep + 1:sep + 3])
    assert "reported: Paper A, Table 1" in reported_rows[0] and "**" not in reported_rows[0].split("|")[4]
    assert "Elsewhere" not in md  # another family's numbers stay out
    csv = (tmp_path / "lb" / "toy-v1.csv").read_text()
    assert 'a,quick,reported,,,,,"reported: Paper A, Table 1","Paper A, Table 1",99.0000,,81.0000,' in csv
    assert re.search(r"^a,quick,measured,.*,1\.0000,0\.3333,2\.0000,pass,", csv, re.M)


def test_the_shipped_published_numbers_appear_for_their_family(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    put(store, *fake_record("prototype", 0, [10, 12, 15], bench="cifar100@1", family="cifar100"))
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "cifar100-v1.md").read_text()
    assert "reported: Yang et al., ICLR 2023, Table 2 (CIFAR-100)" in md
    assert "| A8 " in md and "Reproduced" not in md  # no measured etf [paper] row to compare
    assert {e.family for e in load_reported()} == {"cifar100", "mini_imagenet", "cub200"}


def test_diagnostics_columns_from_records_and_empty_cells_without_them(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    put(store, *fake_record("etf", 0, [10, 12, 15], diagnostics=diag(0.2, 0.9)))
    put(store, *fake_record("etf", 1, [10, 12, 15], diagnostics=diag(0.4, 0.7, equiang=0.5)))
    put(store, *fake_record("proto", 0, [10, 12, 14], diagnostics=diag(0.8, 0.6)))
    put(store, *fake_record("proto", 1, [10, 12, 14], diagnostics=diag(0.6, 0.8)))
    put(store, *fake_record("old", 0, [10, 12, 13]))  # no "diagnostics" key (older record)
    put(store, *fake_record("old", 1, [10, 12, 13]))
    put(store, *fake_record("noembed", 0, [10, 12, 12], diagnostics=None))
    put(store, *fake_record("noembed", 1, [10, 12, 12], diagnostics=None))
    write_reports(store, tmp_path / "lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    # Mean over seeds of the last session: etf NC1 (0.2 + 0.4) / 2, alignment (0.9 + 0.7) / 2.
    assert cell(md, "etf", "NC1 (last)") == "**0.300**" and cell(md, "proto", "NC1 (last)") == "0.700"
    assert cell(md, "etf", "Equiang. (last)") == "0.400" and cell(md, "proto", "Equiang. (last)") == "**0.300**"
    assert cell(md, "etf", "Align base (last)") == "**0.800**" and cell(md, "proto", "Align base (last)") == "0.700"
    for method in ("old", "noembed"):
        assert [cell(md, method, c) for c in ("NC1 (last)", "Equiang. (last)", "Align base (last)")] == ["", "", ""]
    csv = (tmp_path / "lb" / "toy-v1.csv").read_text()
    assert re.search(r"^etf,.*,0\.3000,0\.1414,0\.4000,0\.1414,0\.8000,0\.1414,", csv, re.M)
    rows = collect(store)["toy@1"].rows
    assert np.allclose(rows[("etf", "quick")].mean_curve("nc1")[0], [0.5, 0.4, 0.3])


def _assert_valid_png(path: Path) -> None:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20, f"{path.name} looks blank"


def test_plots_are_written_as_valid_non_blank_pngs(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    put(store, *fake_record("a", 2, [9, 11, 14], diagnostics=diag(0.3, 0.8)))
    written = write_reports(store, tmp_path / "lb")
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    assert pngs == [f"toy-v1-{s}.png" for s in ("accuracy", "base-novel", "diagnostics", "matrix")]
    for name in pngs:
        _assert_valid_png(tmp_path / "lb" / name)
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    assert "![Accuracy per session](toy-v1-accuracy.png)" in md
    # Default heat map: the best non-oracle method by average accuracy (a: 79.17 avg > c, b).
    assert "Session x class-group accuracy of a [quick]" in md


def test_heatmap_method_option_and_its_error(tmp_path, capsys):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    assert main(["report", "--runs", str(store.root), "--output", str(tmp_path / "lb"), "--heatmap-method", "c"]) == 0
    assert "Session x class-group accuracy of c [quick]" in (tmp_path / "lb" / "toy-v1.md").read_text()
    capsys.readouterr()
    assert main(["report", "--runs", str(store.root), "--output", str(tmp_path / "lb2"), "--heatmap-method", "zzz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --heatmap-method 'zzz' has no completed run; methods with results: a, b, c")
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ReportError):
        write_reports(store, tmp_path / "lb3", heatmap_method="zzz")


def test_provenance_comes_from_the_records(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    write_reports(store, tmp_path / "lb", command="fscil-bench report --output lb")
    md = (tmp_path / "lb" / "toy-v1.md").read_text()
    prov = md.split("## Provenance", 1)[1]
    assert "Report command: `fscil-bench report --output lb`" in prov
    assert "Run commands: `fscil-bench run --seeds 0 1`" in prov
    assert "fscil-bench 0.1.0 (git abc123)" in prov and "cpu: x86_64, 2 CPUs" in prov
    assert "Presets: quick" in prov
    assert "5 records, started/finished 2025-01-01T10:00:00+00:00 to 2025-01-02T10:05:00+00:00" in prov


class NearestPixelMean(MethodBase):
    """Class means of raw pixels; logits = minus the squared distance (fast, far from perfect)."""

    name = "pixel-mean"
    presets = {"quick": {}}

    def fit_base(self, session, ctx):
        self.means = {}
        self.fit_session(session, ctx)

    def fit_session(self, session, ctx):
        for x, y in session.train.batches(256, augment=False, shuffle=False):
            for c in y.unique().tolist():
                self.means[c] = x[y == c].flatten(1).mean(0)

    def predict(self, images):
        means = torch.stack([self.means[c] for c in range(len(self.means))])
        return -torch.cdist(images.flatten(1), means)


def test_report_from_a_real_run(synthetic_benchmark, run_options, tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    key = RunKey(synthetic_benchmark.id, "pixel-mean", "quick", 0)
    result = run_method(synthetic_benchmark, NearestPixelMean, "quick", 0, run_options)
    assert result.status == "completed", result.error
    store.write(key, build_record(key, synthetic_benchmark, NearestPixelMean, "test", result, "2025-01-01T00:00:00+00:00",
                                  "cpu", "fscil-bench run"), result.predictions, result.test_labels)
    written = write_reports(store, tmp_path / "lb")
    stem = synthetic_benchmark.id.replace("@", "-v")
    md = (tmp_path / "lb" / f"{stem}.md").read_text()
    expected = [f"{100 * a:.2f}" for a in result.metrics["session_acc"]]
    row = md_row(md, "pixel-mean")
    assert row[2] == "1" and [c.replace("**", "") for c in row[3:3 + len(expected)]] == expected
    assert cell(md, "pixel-mean", "NC1 (last)") == ""  # no diagnostics in this record
    assert (tmp_path / "lb" / "index.html") in written


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_page_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (bash scripts/install.sh --test installs it)")
    store = ResultsStore(tmp_path / "runs")
    fill(store)
    write_reports(store, tmp_path / "lb")
    page = (tmp_path / "lb" / "toy-v1.html").resolve()
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # standalone: no network
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                   capture_output=True, timeout=90, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    _assert_valid_png(shot)
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=90, check=False).stdout
    # The sort script ran, the table holds every method row, and the plot is an embedded image.
    assert '<table class="sortable" id="leaderboard" data-sortable="ready">' in dom
    table = dom.split('<tbody class="measured">', 1)[1].split("</tbody>", 1)[0]
    assert [m for m in re.findall(r'<tr[^>]*><td class="text">([^<]+)</td>', table)] == ["a", "c", "b"]
    assert re.search(r'<img alt="Accuracy per session"[^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', dom)
    index = (tmp_path / "lb" / "index.html").read_text()
    assert '<a href="toy-v1.html">toy@1</a>' in index


def test_a_metric_added_later_appears_for_runs_recorded_before_it(tmp_path, monkeypatch, no_plots):
    """Adding a prediction-based metric is one descriptor; ``fscil-bench report`` computes it from the
    saved predictions of records written before it existed."""
    from fscil_bench.metrics import descriptors

    store = ResultsStore(tmp_path / "runs")
    fill(store)  # records written with today's metrics
    first = descriptors.MetricDescriptor(
        "first_acc", "First", "A_0 again, to test the table.", "higher", "percent", "run", "predictions",
        lambda r: r.accuracies[0], column=True)
    monkeypatch.setattr(descriptors, "METRICS", descriptors.METRICS + (first,))
    assert main(["report", "--runs", str(store.root), "-o", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "toy-v1.md").read_text()
    header, _, *rows = [line for line in md.splitlines() if line.startswith("|")]
    titles = [c.strip() for c in header.strip("|").split("|")]
    assert "First" in titles and "- **First (first_acc)**: A_0 again, to test the table." in md
    a_row = next(r for r in rows if r.startswith("| a "))
    cells = [c.strip().replace("**", "") for c in a_row.strip("|").split("|")]
    # method a: seed 0 has 10/10 right in session 0, seed 1 has 8/10: mean 90.00, std 14.14
    assert cells[titles.index("First")] == "90.00 ± 14.14" == cells[titles.index("A0")]


def test_stored_numbers_that_disagree_with_the_predictions_are_not_believed(tmp_path, no_plots):
    store = ResultsStore(tmp_path / "runs")
    rec, preds = fake_record("a", 0, [10, 12, 15])
    rec["metrics"]["last"] = 0.99  # claims 99% where the predictions give 15/20
    put(store, rec, preds)
    rec, preds = fake_record("b", 0, [10, 5, 5])
    path = store.run_dir(RunKey("toy@1", "b", "quick", 0))
    put(store, rec, preds)
    (path / "predictions.npz").write_bytes(b"damaged")
    write_reports(store, tmp_path / "out")
    md = (tmp_path / "out" / "toy-v1.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    titles = [c.strip() for c in header.strip("|").split("|")]
    row_a = next(line for line in md.splitlines() if line.startswith("| a "))
    cells = [c.strip().replace("**", "") for c in row_a.strip("|").split("|")]
    assert cells[titles.index("Last")] == "75.00" and "stored last disagree with its predictions" in row_a
    row_b = next(line for line in md.splitlines() if line.startswith("| b "))
    assert "failed: seed 0 (predictions.npz missing or corrupt)" in row_b
