"""Leaderboards from the results store: per benchmark and track a Markdown table, a CSV, PNG plots
and a standalone HTML page, plus an ``index.html`` linking the pages.

Runs from scratch and runs that start from pretrained weights are in separate tables (one per
weights), never ranked together; a table whose weights were trained on data holding the
benchmark's classes says so (:mod:`fscil_bench.reporting.tracks`).

Rows aggregate the seeds of one (method, preset): mean ± sample std over seeds, with n. A
failed run or a missing seed is never dropped silently: the row says how many seeds completed,
which failed and which are missing. Published numbers (``reported_results.json``) appear as
separate "reported" rows; a measured row whose (benchmark family, method, preset) matches one
gets "measured - reported" and pass/fail against the entry's tolerance. Markdown and CSV are
byte-identical for the same records (fixed order and float format; the only dates are those
of the runs).

The work is split over :mod:`fscil_bench.reporting` (collect, tables, plots, html, provenance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from fscil_bench.cache import atomic_write_text
from fscil_bench.metrics import descriptors
from fscil_bench.metrics.descriptors import METRICS, MetricDescriptor
from fscil_bench.reporting import html, plots, provenance, tracks
from fscil_bench.reporting.collect import BenchmarkResults, MethodRow, collect
from fscil_bench.reporting.reported import (
    DEFAULT_TOLERANCE,
    ReportedEntry,
    for_family,
    load_reported,
)
from fscil_bench.reporting.tables import Table, build_table, to_csv, to_markdown
from fscil_bench.results.store import ResultsStore


class ReportError(ValueError):
    """A report option that cannot be satisfied (e.g. an unknown heat-map method)."""


def pick_heatmap_row(bench: BenchmarkResults, method: str | None) -> MethodRow | None:
    """The row whose accuracy matrix is drawn.

    ``method`` given: its preset with the highest mean average accuracy. Otherwise the best
    non-oracle, protocol-clean row by mean average accuracy (ties: method, then preset name); an
    oracle or a row that is not protocol-clean only when nothing else has results. ``None`` when no row of the benchmark has a completed run.
    """
    rows = [r for r in bench.rows.values() if r.matrices and (method is None or r.method == method)]

    def rank(r: MethodRow) -> tuple:
        avg = r.mean("avg")
        return (r.oracle, bool(r.not_clean), -avg if not math.isnan(avg) else math.inf, r.method, r.preset)

    return min(rows, key=rank) if rows else None


def legend_lines(table: Table, tolerance_note: bool) -> list[str]:
    lines = [
        "Top-1 accuracy (%) after each session, mean ± sample std over the n completed seeds; "
        "diagnostics (NC1, equiangularity, alignment) are means over the seeds that recorded them.",
        "Bold: the best measured value of each column among non-oracle methods (higher is better for accuracies "
        "and alignment; lower for PD, forgetting, NC1 and equiangularity). Time (s) is the mean wall time of a "
        "whole run and is not ranked. Oracle methods break the protocol on purpose and are not ranked; neither "
        "are rows marked NOT PROTOCOL-CLEAN (a base checkpoint chosen by test accuracy, the papers' rule).",
        "Failed runs and missing seeds are listed in Notes; their cells are not part of the mean. Every "
        "accuracy is recomputed from the run's saved predictions; a run whose stored numbers disagree with them is "
        "named in Notes.",
    ]
    if table.reported:
        lines.append("Reported rows are published numbers (source in Notes), not measured here, and not ranked.")
    if tolerance_note:
        lines.append("Last − reported and Avg − reported: measured minus published accuracy in points; Reproduced: "
                     "pass when both are within the stated tolerance (default "
                     f"±{DEFAULT_TOLERANCE:g} points).")
    return lines


def _figures(bench: BenchmarkResults, reported: list[ReportedEntry], heatmap: MethodRow | None) -> list[tuple[str, str, bytes]]:
    """(file suffix, title, PNG) of every figure that has something to draw."""
    figures = [
        ("accuracy", "Accuracy per session", plots.accuracy_curves(bench, reported)),
        ("base-novel", "Base and novel accuracy per session", plots.base_novel_curves(bench)),
        ("matrix", f"Session x class-group accuracy of {heatmap.label}" if heatmap else "",
         plots.accuracy_matrix_heatmap(bench, heatmap) if heatmap else None),
        ("diagnostics", "NC1 and base-class alignment per session", plots.diagnostics_curves(bench)),
    ]
    return [(suffix, title, png) for suffix, title, png in figures if png]


def definitions(metrics: Sequence[MetricDescriptor] = METRICS) -> dict[str, str]:
    """The Definitions section: every metric's title and definition, in the table's order."""
    return {f"{m.title} ({m.key})": m.definition for m in metrics}


def write_reports(store: ResultsStore, out_dir: Path, command: str | None = None, heatmap_method: str | None = None,
                  reported_path: Path | None = None, metrics: Sequence[MetricDescriptor] | None = None) -> list[Path]:
    """Write every (benchmark, track)'s ``<stem>.md``, ``.csv``, ``.html`` and ``-<plot>.png``, and ``index.html``.

    ``stem`` is the benchmark id with ``@`` as ``-v`` (``glyphs100@1`` -> ``glyphs100-v1``), followed
    by ``-<track>`` for a track other than ``scratch``.
    Returns the written paths (per benchmark: Markdown, CSV, HTML, PNGs; then the index);
    an empty list when the store holds no record. Raises :class:`ReportError` when
    ``heatmap_method`` has no completed run on any benchmark.
    """
    metrics = descriptors.METRICS if metrics is None else metrics  # looked up now: the table may have grown
    results = collect(store, metrics)
    if heatmap_method and results and not any(r.method == heatmap_method and r.matrices
                                              for b in results.values() for r in b.rows.values()):
        known = sorted({r.method for b in results.values() for r in b.rows.values() if r.matrices})
        raise ReportError(f"--heatmap-method {heatmap_method!r} has no completed run; methods with results: "
                          f"{', '.join(known) or 'none'}")
    if not results:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    all_reported = load_reported(reported_path)
    written: list[Path] = []
    index_entries = []
    for bench in results.values():
        reported = for_family(all_reported, bench.family, bench.track)
        table = build_table(bench, reported, metrics)
        heatmap = pick_heatmap_row(bench, heatmap_method) or pick_heatmap_row(bench, None)
        figures = _figures(bench, reported, heatmap)
        prov = provenance.gather(bench.records, command)
        legend = tracks.track_lines(bench) + legend_lines(table, table.has_comparison)
        defs = definitions(metrics)

        md_path, csv_path, html_path = (out_dir / f"{bench.stem}{ext}" for ext in (".md", ".csv", ".html"))
        lines = [f"# {bench.title}", "", to_markdown(table), ""] + [f"{line}  " for line in legend]
        if figures:
            lines += ["", "## Plots", ""] + [f"![{title}]({bench.stem}-{suffix}.png)" for suffix, title, _ in figures]
        lines += ["", "## Definitions", ""] + [f"- **{k}**: {v}" for k, v in defs.items()]
        lines += ["", "## Provenance", ""] + provenance.to_markdown(prov)
        atomic_write_text(md_path, "\n".join(lines) + "\n")
        atomic_write_text(csv_path, to_csv(table))
        png_paths = []
        for suffix, _, png in figures:
            path = out_dir / f"{bench.stem}-{suffix}.png"
            path.write_bytes(png)
            png_paths.append(path)
        atomic_write_text(html_path, html.page(table, legend, [(t, png) for _, t, png in figures], defs, prov))
        written += [md_path, csv_path, html_path] + png_paths
        n_runs = sum(len(r.seeds) for r in bench.rows.values())
        n_failed = sum(len(r.failed) for r in bench.rows.values())
        index_entries.append((bench.title, html_path.name, f"{len(bench.rows)} method/preset rows, {n_runs} completed runs"
                              + (f", {n_failed} failed" if n_failed else "")))
    index_path = out_dir / "index.html"
    atomic_write_text(index_path, html.index_page(index_entries))
    return written + [index_path]
