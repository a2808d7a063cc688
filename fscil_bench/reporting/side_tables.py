"""The tables under a leaderboard: sources of variance, paired comparisons with the best, cost.

Each is a :class:`SideTable` (title, headers, text cells with their sort keys, legend) that
Markdown, HTML and the CSV all render from; rows follow the leaderboard's order. The numbers come
from :mod:`fscil_bench.reporting.analysis` over every completed run of a row, at any seed, split
and order (the leaderboard's own cells cover the standard split and order only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tabulate import tabulate

from fscil_bench.reporting.analysis import (
    COMPARED,
    MetricComparison,
    Rankings,
    design_text,
    ranking_per_schedule,
    row_cost,
    row_spread,
)
from fscil_bench.reporting.collect import BenchmarkResults, MethodRow
from fscil_bench.reporting.stats import FACTORS
from fscil_bench.reporting.tables import Table

TITLES = {"avg": "Avg", "last": "Last"}
#: How many leading ranked rows the ranking line under the variance table follows.
TOP_RANKS = 5
MIB = 1024.0**2


@dataclass
class SideTable:
    """A titled table of text cells; ``sort_values[i][j]`` is the number a cell sorts by (or None)."""

    anchor: str
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    sort_values: list[list[float | None]] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)
    csv: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)  # (method, preset) -> CSV columns

    def add(self, cells: list[tuple[str, float | None]]) -> None:
        self.rows.append([text for text, _ in cells])
        self.sort_values.append([value for _, value in cells])

    def to_markdown(self) -> str:
        return tabulate(self.rows, headers=self.headers, tablefmt="github", disable_numparse=True)


def _pts(value: float, decimals: int = 2) -> tuple[str, float | None]:
    """A fraction as points (x100), with its sort key."""
    return ("", None) if math.isnan(value) else (f"{100 * value:.{decimals}f}", round(100 * value, 6))


def _rows(bench: BenchmarkResults, table: Table) -> list[MethodRow]:
    return [bench.rows[r.method, r.preset] for r in table.measured]


def variance_table(bench: BenchmarkResults, table: Table) -> SideTable | None:
    """Mean and spread by source of Avg and Last over every run; None when every run of every row
    is on the standard split and order (the leaderboard's ± is then the whole story)."""
    rows = _rows(bench, table)
    if all(r.coord.is_standard for row in rows for r in row.runs):
        return None
    headers = ["Method", "Preset", "Runs"]
    for key in COMPARED:
        headers += [f"{TITLES[key]} mean"] + [f"{TITLES[key]} {f} sd (n)" for f in FACTORS] + [f"{TITLES[key]} total sd (n)"]
    side = SideTable("variance", "Sources of variance", headers, legend=[
        "Every completed run of a row, at every seed, few-shot split and class order (the leaderboard above covers "
        "split 0 and order 0 only). Mean: over all those runs. seed / split / order sd: the pooled sample sd over "
        "that source with the other two held fixed (runs grouped by the other two; groups of two or more runs "
        "pooled by their degrees of freedom); n: how many distinct seeds, splits or orders entered it. Total sd: "
        "the sample sd over every run; n: runs. Points of accuracy."])
    for row in rows:
        cells: list[tuple[str, float | None]] = [(row.method, None), (row.preset, None),
                                                 (design_text(row), len(row.runs))]
        csv: dict[str, object] = {"runs": design_text(row)}
        for key in COMPARED:
            spread = row_spread(row, key)
            cells.append(_pts(spread.mean))
            csv[f"{TITLES[key]} all runs mean"] = _csv_pts(spread.mean)
            for factor in FACTORS:
                s = spread.by_source[factor]
                text, value = _pts(s.sd)
                cells.append((f"{text} ({s.levels})" if text else "", value))
                csv[f"{TITLES[key]} {factor} sd"] = _csv_pts(s.sd)
                csv[f"{TITLES[key]} {factor} levels"] = s.levels
                csv[f"{TITLES[key]} {factor} groups"] = s.groups
            text, value = _pts(spread.total_sd)
            cells.append((f"{text} ({spread.n})" if text else "", value))
            csv[f"{TITLES[key]} total sd"] = _csv_pts(spread.total_sd)
            csv[f"{TITLES[key]} total n"] = spread.n
        side.add(cells)
        side.csv[row.method, row.preset] = csv
    rankings = {key: ranking_per_schedule(rows, key) for key in COMPARED}
    side.legend += [_flips(rankings[key], key) for key in COMPARED if rankings[key]]
    side.legend += [_top_ranks(rankings[key], key) for key in COMPARED if rankings[key]]
    return side


def _flips(ranking: Rankings, key: str) -> str:
    """One line: the best row by ``key`` at each split and order (mean over seeds), and the row
    that is best (or tied best) most often."""
    best = {schedule: groups[0] for schedule, groups in ranking.items()}
    cells = "; ".join(f"split {split} order {order}: {' = '.join(r.label for r in top)}"
                      for (split, order), top in best.items())
    counts: dict[str, int] = {}
    for top in best.values():
        for r in top:
            counts[r.label] = counts.get(r.label, 0) + 1
    leader = min(counts, key=lambda label: (-counts[label], label))
    return (f"Best by {TITLES[key]} at each split and order (mean over seeds; ranked rows: not oracle, "
            f"protocol-clean): {cells}; "
            f"{leader} is best or tied best in {counts[leader]} of {len(best)}.")


def _top_ranks(ranking: Rankings, key: str, k: int = TOP_RANKS) -> str:
    """One line: the leading ranked rows by ``key`` at each split and order (``>`` between ranks,
    ``=`` within a tie; whole tie groups until ``k`` rows are shown), and whether that ranking is
    the same at every split and order."""
    rankings = {}
    for (split, order), groups in ranking.items():
        shown, count = [], 0
        for group in groups:
            if count >= k:
                break
            shown.append(" = ".join(r.label for r in group))
            count += len(group)
        rankings[split, order] = " > ".join(shown)
    distinct = len(set(rankings.values()))
    verdict = (f"the same at all {len(rankings)}" if distinct == 1
               else f"{distinct} different rankings among {len(rankings)}")
    cells = "; ".join(f"split {split} order {order}: {text}" for (split, order), text in rankings.items())
    return f"Top {k} by {TITLES[key]} at each split and order (mean over seeds; ranked rows): {cells}; {verdict}."


def _csv_pts(value: float) -> float | None:
    return None if math.isnan(value) else round(100 * value, 4)


def _interval(low: float, high: float) -> tuple[str, float | None]:
    if math.isnan(low):
        return "", None
    return f"[{100 * low:+.2f}, {100 * high:+.2f}]", round(100 * low, 6)


def _p(value: float) -> tuple[str, float | None]:
    return ("", None) if math.isnan(value) else (f"{value:.3g}", value)


def comparison_table(bench: BenchmarkResults, table: Table) -> SideTable | None:
    """Each ranked row minus the best row of Avg and of Last; None with fewer than two ranked rows."""
    rows = _rows(bench, table)
    if sum(not r.oracle and not r.not_clean for r in rows) < 2 or not any(t.reference for t in table.ties.values()):
        return None
    headers = ["Method", "Preset"]
    for key in COMPARED:
        t = TITLES[key]
        headers += [f"Δ {t}", f"{t} shared runs", f"{t} 95% CI (runs)", f"{t} p (t)", f"{t} p (Wilcoxon)",
                    f"{t} 95% CI (test images)", f"≈ best ({t})"]
    references = {k: t.reference.label for k, t in table.ties.items() if t.reference}
    side = SideTable("paired", "Paired comparisons with the best", headers, legend=[
        "Each row minus the best row of the column (" + "; ".join(f"{TITLES[k]}: {v}" for k, v in references.items())
        + "), in points, over the runs both completed at the same seed, split and order (same base-session seed, "
        "shots, class order and test images). 95% CI (runs): paired t interval over those runs, with the paired "
        "t-test's p and the Wilcoxon signed-rank test's p. 95% CI (test images): percentile interval of the mean "
        "difference when the test images, which every run shares, are resampled with replacement within each class "
        "(2000 resamples, runs held fixed): the noise of a finite test set alone.",
        "≈ best: yes when the difference is not significant at 95%: by the paired t interval over runs when there "
        "are two or more shared runs, by the test-image interval for a single shared run."])
    for row, table_row in zip(rows, table.measured):
        cells: list[tuple[str, float | None]] = [(row.method, None), (row.preset, None)]
        csv: dict[str, object] = {}
        for key in COMPARED:
            ties = table.ties[key]
            comp = ties.comparisons.get((row.method, row.preset))
            mark = table_row.ties.get(key, "")
            if comp is None:
                cells += [("reference" if mark == "best" else "", None)] + [("", None)] * 5 + [(mark, None)]
                continue
            cells += _comparison_cells(comp) + [(mark, None)]
            csv.update(_comparison_csv(TITLES[key], comp))
        side.add(cells)
        side.csv[row.method, row.preset] = csv
    return side


def _comparison_cells(comp: MetricComparison) -> list[tuple[str, float | None]]:
    runs, images = comp.runs, comp.images
    delta = ("", None) if math.isnan(runs.mean) else (f"{100 * runs.mean:+.2f}", round(100 * runs.mean, 6))
    return [delta, (str(runs.n), runs.n), _interval(runs.low, runs.high), _p(runs.p_t), _p(runs.p_wilcoxon),
            _interval(images.low, images.high)]


def _comparison_csv(title: str, comp: MetricComparison) -> dict[str, object]:
    runs, images = comp.runs, comp.images
    return {f"{title} - best": _csv_pts(runs.mean), f"{title} shared runs": runs.n,
            f"{title} CI runs low": _csv_pts(runs.low), f"{title} CI runs high": _csv_pts(runs.high),
            f"{title} p t": None if math.isnan(runs.p_t) else round(runs.p_t, 6),
            f"{title} p wilcoxon": None if math.isnan(runs.p_wilcoxon) else round(runs.p_wilcoxon, 6),
            f"{title} CI images low": _csv_pts(images.low), f"{title} CI images high": _csv_pts(images.high)}


def cost_table(bench: BenchmarkResults, table: Table) -> SideTable:
    """Accuracy next to what it cost: per row, means over its completed runs."""
    side = SideTable("cost", "Cost", ["Method", "Preset", "Avg", "Last", "Runs", "Device", "Train (s)", "Eval (s)",
                                      "Peak memory (MiB)", "Declared memory (MiB)", "Declared items"], legend=[
        "Means over every completed run of the row (Avg and Last: the leaderboard's, split 0 and order 0). Train "
        "and Eval: seconds of a whole run spent in fit_base and fit_session, and in predicting the test images. "
        "Peak memory: the highest memory in use during a run above its start, measured where the method runs: on a "
        "CUDA device the peak of allocated tensors (torch.cuda.max_memory_allocated), on the CPU the peak growth of "
        "the process's resident set (RSS); a lower bound where marked (lifetime peak). Declared memory: what the "
        "method says it keeps from past sessions beyond its weights (memory()), after the last session."])
    for row, table_row in zip(_rows(bench, table), table.measured):
        cost = row_cost(row)
        avg, last = table_row.cells["avg"], table_row.cells["last"]
        peak = ("", None) if math.isnan(cost.peak_bytes) else (f"{cost.peak_bytes / MIB:.1f}", cost.peak_bytes / MIB)
        if peak[0] and "rss_lifetime_peak" in cost.peak_kinds:
            peak = (f"≥ {peak[0]}", peak[1])
        declared = ("", None) if math.isnan(cost.declared_bytes) else (f"{cost.declared_bytes / MIB:.2f}",
                                                                      cost.declared_bytes / MIB)
        side.add([(row.method, None), (row.preset, None),
                  ("" if math.isnan(avg.mean) else f"{avg.mean:.2f}", None if math.isnan(avg.mean) else avg.mean),
                  ("" if math.isnan(last.mean) else f"{last.mean:.2f}", None if math.isnan(last.mean) else last.mean),
                  (str(cost.runs), cost.runs), (", ".join(cost.devices), None),
                  _seconds(cost.fit_seconds), _seconds(cost.eval_seconds), peak, declared, (cost.declared_items, None)])
        side.csv[row.method, row.preset] = {
            "device": ", ".join(cost.devices), "train seconds per run": _round(cost.fit_seconds),
            "eval seconds per run": _round(cost.eval_seconds), "peak memory MiB": _round(cost.peak_bytes / MIB),
            "peak memory kind": " ".join(cost.peak_kinds), "declared memory MiB": _round(cost.declared_bytes / MIB),
            "declared items": cost.declared_items}
    return side


def _seconds(value: float) -> tuple[str, float | None]:
    return ("", None) if math.isnan(value) else (f"{value:.1f}", value)


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def side_tables(bench: BenchmarkResults, table: Table) -> list[SideTable]:
    """The tables shown under the leaderboard of ``bench``, in order."""
    return [t for t in (variance_table(bench, table), comparison_table(bench, table), cost_table(bench, table)) if t]
