"""The leaderboard table of one benchmark: columns, formatted cells, best marks; Markdown and CSV.

The columns are the per-session accuracies ``A_t`` and every metric descriptor marked as a
column (:data:`fscil_bench.metrics.descriptors.METRICS`), in the table's order, with their titles,
units and directions. Cells are mean ± sample std over completed seeds. Percentages are shown
with two decimals; plain numbers (the diagnostics) with three (mean only in Markdown/HTML; the
CSV keeps the std); times in seconds.

The best value of a column is the best *displayed* mean among measured, non-oracle,
protocol-clean rows, so ties at display precision are all marked; metrics without a direction (time) are not ranked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from tabulate import tabulate

from fscil_bench.metrics.descriptors import METRICS, MetricDescriptor
from fscil_bench.reporting.collect import BenchmarkResults, MethodRow, mean_std
from fscil_bench.reporting.reported import Comparison, ReportedEntry, compare


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    unit: str  # "percent" | "number" | "seconds" (see MetricDescriptor.unit)
    better: str | None  # "higher" | "lower" | None (not ranked)

    @property
    def decimals(self) -> int:
        return 3 if self.unit == "number" else 2

    @property
    def session(self) -> int | None:
        """``t`` for the column of ``A_t``, else ``None``."""
        return int(self.key[1:]) if self.key[:1] == "S" and self.key[1:].isdigit() else None

    @property
    def scale(self) -> float:
        return 100.0 if self.unit == "percent" else 1.0

    @classmethod
    def of(cls, metric: MetricDescriptor) -> Column:
        return cls(metric.key, metric.title, metric.unit, metric.direction)


def metric_columns(metrics: Sequence[MetricDescriptor] = METRICS) -> list[Column]:
    """The summary columns: every run-shaped metric marked as a column, the time last."""
    cols = [Column.of(m) for m in metrics if m.column]
    return sorted(cols, key=lambda c: c.key == TIME_KEY)


TIME_KEY = "seconds"
COMPARISON_TITLES = ("Last − reported", "Avg − reported", "Reproduced")


def session_columns(num_sessions: int) -> list[Column]:
    return [Column(f"S{t}", f"A{t}", "percent", "higher") for t in range(num_sessions)]


@dataclass
class Cell:
    mean: float = math.nan  # in display units (percent, seconds, ...)
    std: float = math.nan
    n: int = 0
    best: bool = False

    def text(self, column: Column, with_std: bool = True) -> str:
        if math.isnan(self.mean):
            return ""
        d = column.decimals
        if with_std and self.n > 1 and column.unit != "number":
            return f"{self.mean:.{d}f} ± {self.std:.{d}f}"
        return f"{self.mean:.{d}f}"


@dataclass
class TableRow:
    kind: str  # "measured" | "reported"
    method: str
    preset: str
    cells: dict[str, Cell]
    n: int | None = None
    seeds: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    flagged: dict[int, str] = field(default_factory=dict)
    oracle: bool = False
    extra_data: list[str] = field(default_factory=list)
    not_clean: list[str] = field(default_factory=list)
    source: str = ""
    comparison: Comparison | None = None
    reported_source: str = ""  # the entry a measured row is compared with
    fit_seconds: float = math.nan
    eval_seconds: float = math.nan

    def notes(self) -> str:
        """What a reader must know about the row: oracle, extra data, failures, missing seeds."""
        parts = []
        if self.kind == "reported":
            parts.append(f"reported: {self.source}")
        if self.oracle:
            parts.append("oracle (not ranked)")
        parts += [f"NOT PROTOCOL-CLEAN (not ranked): {why}" for why in self.not_clean]
        parts += [f"extra data: {e}" for e in self.extra_data]
        if self.failed:
            parts.append("failed: " + ", ".join(f"seed {s} ({why})" for s, why in sorted(self.failed.items())))
        if self.missing:
            parts.append("missing: " + ", ".join(f"seed {s}" for s in self.missing))
        parts += [f"seed {s}: {why}" for s, why in sorted(self.flagged.items())]
        return "; ".join(parts)


@dataclass
class Table:
    benchmark: str
    columns: list[Column]  # every value column: sessions first, then the metric columns (time last)
    measured: list[TableRow]
    reported: list[TableRow]
    has_comparison: bool

    @property
    def ranked_columns(self) -> list[Column]:
        return [c for c in self.columns if c.better]


def _cell(values: list[float], column: Column) -> Cell:
    mean, std = mean_std(values)
    n = sum(not math.isnan(v) for v in values)
    return Cell(column.scale * mean, column.scale * std if n > 1 else math.nan, n)  # no spread from one value


def _measured_row(row: MethodRow, columns: list[Column]) -> TableRow:
    cells = {}
    for c in columns:
        if c.session is not None:  # seeds that stopped early have no value here (shown as failed)
            cells[c.key] = _cell([curve[c.session] for curve in row.curves("session_acc") if c.session < len(curve)], c)
        else:
            cells[c.key] = _cell(row.values.get(c.key, []), c)
    return TableRow("measured", row.method, row.preset, cells, n=len(row.seeds), seeds=sorted(row.seeds),
                    failed=dict(row.failed), missing=list(row.missing), flagged=dict(row.flagged), oracle=row.oracle,
                    extra_data=list(row.extra_data), not_clean=list(row.not_clean), fit_seconds=mean_std(row.fit_seconds)[0],
                    eval_seconds=mean_std(row.eval_seconds)[0])


def _reported_row(entry: ReportedEntry, columns: list[Column]) -> TableRow:
    cells = {c.key: Cell() for c in columns}
    for t, acc in enumerate(entry.accuracy):
        cells[f"S{t}"] = Cell(acc, math.nan, 1)
    cells["avg"], cells["last"], cells["pd"] = Cell(entry.average, n=1), Cell(entry.last, n=1), Cell(entry.pd, n=1)
    return TableRow("reported", entry.method, entry.preset, cells, source=entry.source)


def _mark_best(table: Table) -> None:
    ranked = [r for r in table.measured if not r.oracle and not r.not_clean]
    for col in table.ranked_columns:
        shown = {id(r): round(r.cells[col.key].mean, col.decimals) for r in ranked if not math.isnan(r.cells[col.key].mean)}
        if not shown:
            continue
        best = max(shown.values()) if col.better == "higher" else min(shown.values())
        for r in ranked:
            if shown.get(id(r)) == best:
                r.cells[col.key].best = True


def build_table(bench: BenchmarkResults, reported: list[ReportedEntry],
                metrics: Sequence[MetricDescriptor] = METRICS) -> Table:
    """The table of ``bench`` with the ``reported`` entries of its family as separate rows.

    Measured rows are sorted by mean average accuracy (highest first; rows without results
    last), then by method and preset; reported rows by method, preset and source.
    """
    num_sessions = max([bench.num_sessions] + [len(e.accuracy) for e in reported])
    columns = session_columns(num_sessions) + metric_columns(metrics)
    measured = [_measured_row(r, columns) for r in bench.rows.values()]
    measured.sort(key=lambda r: (-r.cells["avg"].mean if not math.isnan(r.cells["avg"].mean) else math.inf,
                                 r.method, r.preset))
    by_key = {(e.method, e.preset): e for e in reported}
    for row in measured:
        entry = by_key.get((row.method, row.preset))
        if entry is not None:
            row.comparison = compare(entry, row.cells["last"].mean / 100, row.cells["avg"].mean / 100)
            row.reported_source = entry.source
    table = Table(bench.title, columns, measured, [_reported_row(e, columns) for e in reported],
                  has_comparison=any(r.reported_source for r in measured))
    _mark_best(table)
    return table


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

def comparison_texts(row: TableRow) -> list[str]:
    """The "measured - reported" cells of a row: delta last, delta average, pass/fail."""
    c = row.comparison
    if c is None:
        return ["", "", "no result" if row.reported_source else ""]
    return [f"{c.delta_last:+.2f}", f"{c.delta_avg:+.2f}",
            f"{'pass' if c.passed else 'fail'} (±{c.tolerance:g})"]


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table: measured rows, then a "reported" section."""
    value_cols = [c for c in table.columns if c.key != TIME_KEY]
    time = next((c for c in table.columns if c.key == TIME_KEY), None)
    headers = ["Method", "Preset", "n"] + [c.title for c in value_cols]
    headers += list(COMPARISON_TITLES) if table.has_comparison else []
    headers += ([time.title] if time else []) + ["Notes"]

    def values(row: TableRow) -> list[str]:
        texts = []
        for c in value_cols:
            cell = row.cells.get(c.key, Cell())
            text = cell.text(c)
            texts.append(f"**{text}**" if cell.best and text else text)
        return texts

    body = []
    for row in table.measured:
        line = [row.method, row.preset, str(row.n)] + values(row)
        line += comparison_texts(row) if table.has_comparison else []
        body.append(line + ([row.cells[time.key].text(time)] if time else []) + [row.notes()])
    if table.reported:
        width = len(headers)
        body.append(["**reported**", "", ""] + [""] * (width - 3))
        for row in table.reported:
            line = [f"*{row.method}*", row.preset, ""] + values(row)
            line += ["", "", ""] if table.has_comparison else []
            body.append(line + ([""] if time else []) + [row.notes()])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

def _num(value: float, decimals: int = 4) -> float | None:
    return None if math.isnan(value) else round(value, decimals)


def to_frame(table: Table) -> pd.DataFrame:
    """One line per row (measured, then reported): means and stds in display units, best marks."""
    records = []
    for row in table.measured + table.reported:
        rec: dict[str, object] = {
            "method": row.method, "preset": row.preset, "kind": row.kind,
            "n": row.n if row.kind == "measured" else "",
            "seeds": " ".join(map(str, row.seeds)),
            "failed": "; ".join(f"seed {s}: {why}" for s, why in sorted(row.failed.items())),
            "missing": " ".join(map(str, row.missing)),
            "notes": row.notes(), "source": row.source or row.reported_source,
        }
        for c in table.columns:
            cell = row.cells.get(c.key, Cell())
            rec[f"{c.title} mean"] = _num(cell.mean)
            rec[f"{c.title} std"] = _num(cell.std)
        rec["fit seconds mean"] = _num(row.fit_seconds)
        rec["eval seconds mean"] = _num(row.eval_seconds)
        comp = row.comparison
        rec["last - reported"] = _num(comp.delta_last) if comp else None
        rec["avg - reported"] = _num(comp.delta_avg) if comp else None
        rec["tolerance"] = comp.tolerance if comp else None
        rec["reproduced"] = ("pass" if comp.passed else "fail") if comp else ("no result" if row.reported_source else "")
        rec["best in"] = " ".join(c.title for c in table.columns if row.cells.get(c.key, Cell()).best)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def to_csv(table: Table) -> str:
    """The CSV text; a fixed float format keeps it byte-identical for the same records."""
    return to_frame(table).to_csv(index=False, lineterminator="\n", float_format="%.4f")
