"""Two methods on one benchmark, compared run by run: what ``fscil-bench compare A B`` prints.

The difference ``B - A`` in last-session and average accuracy over the runs both completed at the
same (seed, split, order), with (see :mod:`fscil_bench.reporting.stats`):

* per run, a 95% percentile bootstrap interval over its test images (resampled within each class);
* over the runs, the paired t interval with its p-value and the Wilcoxon signed-rank p-value;
* over the runs, the bootstrap interval over their shared test images, with the runs held fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fscil_bench.reporting.analysis import COMPARED, MetricComparison, compare_rows, image_bootstrap, matched_runs
from fscil_bench.reporting.collect import BenchmarkResults, MethodRow, RunCoord, collect
from fscil_bench.reporting.stats import Interval
from fscil_bench.results.store import ResultsStore

TITLES = {"avg": "Avg", "last": "Last"}


class CompareError(ValueError):
    """A comparison that cannot be made (unknown method, no shared run, ambiguous benchmark)."""


@dataclass
class Comparison:
    """``b - a`` on ``benchmark``: per matched run and over them (fractions)."""

    benchmark: str
    a: MethodRow
    b: MethodRow
    coords: list[RunCoord]
    per_run: dict[str, list[tuple[float, Interval]]]  # metric -> per matched run: (difference, images CI)
    overall: dict[str, MetricComparison]
    only_a: list[RunCoord] = field(default_factory=list)
    only_b: list[RunCoord] = field(default_factory=list)


def _parse(name: str, preset: str | None) -> tuple[str, str | None]:
    method, _, own = name.partition(":")
    return method, own or preset


def _pick_row(bench: BenchmarkResults, name: str, preset: str | None) -> MethodRow | None:
    method, preset = _parse(name, preset)
    rows = [r for (m, p), r in bench.rows.items() if m == method and (preset is None or p == preset)]
    if len(rows) > 1:
        raise CompareError(f"{method!r} has runs with presets {', '.join(sorted(r.preset for r in rows))} on "
                           f"{bench.id}; choose one with --preset or {method}:PRESET")
    return rows[0] if rows else None


def _keep(coord: RunCoord, seeds, splits, orders) -> bool:
    return ((seeds is None or coord.seed in seeds) and (splits is None or coord.split in splits)
            and (orders is None or coord.order in orders))


def _restrict(row: MethodRow, seeds, splits, orders) -> MethodRow:
    return MethodRow(row.method, row.preset, row.oracle, runs=[r for r in row.runs if _keep(r.coord, seeds, splits, orders)])


def compare_methods(store: ResultsStore, a: str, b: str, benchmark: str | None = None, preset: str | None = None,
                    seeds: list[int] | None = None, splits: list[int] | None = None, orders: list[int] | None = None,
                    confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Comparison:
    """Compare methods ``a`` and ``b`` (``NAME`` or ``NAME:PRESET``) on the benchmark both have
    runs of (``benchmark`` when several do), over their shared runs among ``seeds``, ``splits``
    and ``orders`` (all when None). Raises :class:`CompareError` with what to do instead."""
    results = collect(store)
    candidates = [bench for bench in results.values()
                  if (benchmark is None or benchmark in (bench.id, bench.id.split("@")[0]))
                  and _pick_row(bench, a, preset) and _pick_row(bench, b, preset)]
    if not candidates:
        where = f"benchmark {benchmark!r}" if benchmark else "any benchmark"
        have = sorted({f"{m}:{p} on {bench.id}" for bench in results.values() for (m, p) in bench.rows})
        raise CompareError(f"no runs of both {a!r} and {b!r} on {where} under {store.root}; runs found: "
                           + (", ".join(have) or "none"))
    if len(candidates) > 1:
        raise CompareError(f"both methods have runs on {', '.join(c.id for c in candidates)}; choose one with --benchmark")
    bench = candidates[0]
    row_a = _restrict(_pick_row(bench, a, preset), seeds, splits, orders)
    row_b = _restrict(_pick_row(bench, b, preset), seeds, splits, orders)
    pairs = matched_runs(row_a, row_b)
    if not pairs:
        raise CompareError(f"{row_a.label} and {row_b.label} share no completed run (same seed, split and order) "
                           f"on {bench.id}")
    coords = [ra.coord for ra, _ in pairs]
    per_run = {key: [(rb.values[key] - ra.values[key], image_bootstrap([(ra, rb)], key, confidence, resamples, seed))
                     for ra, rb in pairs] for key in COMPARED}
    overall = compare_rows(row_a, row_b, COMPARED, confidence, resamples, seed)
    shared = set(coords)
    return Comparison(bench.id, row_a, row_b, coords, per_run, overall,
                      only_a=sorted(r.coord for r in row_a.runs if r.coord not in shared),
                      only_b=sorted(r.coord for r in row_b.runs if r.coord not in shared))


def _pts(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:+.2f}"


def _ci(low: float, high: float) -> str:
    return "n/a" if math.isnan(low) else f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def format_comparison(c: Comparison) -> str:
    """The comparison as the text ``fscil-bench compare`` prints."""
    level = f"{100 * c.overall['last'].runs.confidence:g}%"
    lines = [f"{c.benchmark}: {c.b.label} minus {c.a.label}, points of accuracy, over {len(c.coords)} shared "
             f"run{'s' if len(c.coords) != 1 else ''} (same seed, split and order)", ""]
    header = f"{'run':<26}" + "".join(f"{'Δ ' + TITLES[k]:>9}  {level + ' CI (test images)':<22}" for k in COMPARED)
    lines.append(header)
    for i, coord in enumerate(c.coords):
        cells = "".join(f"{_pts(c.per_run[k][i][0]):>9}  {_ci(c.per_run[k][i][1].low, c.per_run[k][i][1].high):<22}"
                        for k in COMPARED)
        lines.append(f"{coord.text():<26}" + cells)
    lines.append("")
    for key in COMPARED:
        comp = c.overall[key]
        runs, images = comp.runs, comp.images
        lines.append(f"Δ {TITLES[key]} over the {runs.n} runs: {_pts(runs.mean)}, {level} CI {_ci(runs.low, runs.high)} "
                     f"(paired t, p = {_p(runs.p_t)}; Wilcoxon signed-rank p = {_p(runs.p_wilcoxon)}); "
                     f"test images only: {_ci(images.low, images.high)}")
        verdict = comp.distinguishable
        if verdict is not None:
            sign = "higher" if runs.mean > 0 else "lower"
            lines.append(f"  -> {c.b.label} is {sign} than {c.a.label} at {level} ({comp.test})" if verdict else
                         f"  -> no significant difference at {level} ({comp.test})")
    for label, only in ((c.a.label, c.only_a), (c.b.label, c.only_b)):
        if only:
            lines.append(f"runs of {label} alone (not compared): " + ", ".join(o.text() for o in only))
    lines += ["", "Paired t over runs: mean of the per-run differences ± t quantile x sd / sqrt(n). Test images: "
              f"percentile interval over {c.overall['last'].images.resamples} resamples of the test images (with "
              "replacement within each class, one resample shared by every run), runs held fixed."]
    return "\n".join(lines)
