"""PNG figures of one benchmark, drawn with matplotlib's Agg backend (no display needed).

* :func:`accuracy_curves`: ``A_t`` per session for every measured row (mean over seeds, a
  band of ± one std) and the reported rows (dashed).
* :func:`base_novel_curves`: base-class and novel-class accuracy per session, side by side.
* :func:`accuracy_matrix_heatmap`: the session x class-group matrix ``A[t][g]`` of one row.
* :func:`diagnostics_curves`: NC1 and base-class alignment per session, for rows that have them.

Each returns the PNG bytes (``None`` when there is nothing to draw).
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fscil_bench.reporting.collect import BenchmarkResults, MethodRow
from fscil_bench.reporting.reported import ReportedEntry

#: Drop the "Software" tag so that PNGs change only when the figure does.
PNG_METADATA = {"Software": None}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata=PNG_METADATA)
    return buf.getvalue()


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _rows_with(bench: BenchmarkResults, curve: str) -> list[MethodRow]:
    rows = [r for r in bench.rows.values() if any(not math.isnan(v) for c in r.curves(curve) for v in c)]
    return sorted(rows, key=lambda r: (r.method, r.preset))


def _plot_curve(ax, row: MethodRow, curve: str, colour, scale: float = 100.0) -> None:
    mean, std = row.mean_curve(curve)
    x = np.arange(len(mean))
    label = row.label + (" (oracle)" if row.oracle else "") + (" (not protocol-clean)" if row.not_clean else "")
    ax.plot(x, scale * mean, marker="o", markersize=3, color=colour, label=label,
            linestyle=":" if row.oracle or row.not_clean else "-")
    if len(row.curves(curve)) > 1:
        ax.fill_between(x, scale * (mean - std), scale * (mean + std), color=colour, alpha=0.15, linewidth=0)


def _finish(ax, fig: Figure, title: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel("session")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def accuracy_curves(bench: BenchmarkResults, reported: list[ReportedEntry]) -> bytes | None:
    rows = _rows_with(bench, "session_acc")
    if not rows and not reported:
        return None
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colours = _colours(len(rows) + len(reported))
    for row, colour in zip(rows, colours):
        _plot_curve(ax, row, "session_acc", colour)
    measured_colour = {(r.method, r.preset): c for r, c in zip(rows, colours)}
    for entry, colour in zip(reported, colours[len(rows):]):
        colour = measured_colour.get((entry.method, entry.preset), colour)  # next to the row it is compared with
        ax.plot(range(len(entry.accuracy)), entry.accuracy, linestyle="--", marker="x", markersize=3, color=colour,
                label=f"{entry.method} [{entry.preset}] reported")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _finish(ax, fig, f"{bench.title}: accuracy on all seen classes", "top-1 accuracy (%)")
    return _png(fig)


def base_novel_curves(bench: BenchmarkResults) -> bytes | None:
    rows = _rows_with(bench, "base_acc")
    if not rows:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colours = _colours(len(rows))
    for ax, curve, title in zip(axes, ("base_acc", "novel_acc"), ("base classes", "novel classes")):
        for row, colour in zip(rows, colours):
            _plot_curve(ax, row, curve, colour)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _finish(ax, fig, f"{bench.title}: {title}", "top-1 accuracy (%)", legend=curve == "novel_acc")
    return _png(fig)


def accuracy_matrix_heatmap(bench: BenchmarkResults, row: MethodRow) -> bytes | None:
    matrix = row.mean_matrix()
    if matrix is None:
        return None
    pct = 100 * matrix
    fig = Figure(figsize=(1.2 + 0.55 * pct.shape[1], 1.0 + 0.5 * pct.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(pct), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (t, g), value in np.ndenumerate(pct):
        if not math.isnan(value):
            ax.text(g, t, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 60 else "black")
    ax.set_xticks(range(pct.shape[1]))
    ax.set_yticks(range(pct.shape[0]))
    ax.set_xlabel("class group g (0 = base)")
    ax.set_ylabel("after session t")
    ax.set_title(f"{bench.title}: A[t][g] of {row.label}, n = {len(row.matrices)}", fontsize=9)
    fig.colorbar(image, ax=ax, label="top-1 accuracy (%)")
    return _png(fig)


def diagnostics_curves(bench: BenchmarkResults) -> bytes | None:
    rows = sorted({id(r): r for c in ("nc1", "align_base") for r in _rows_with(bench, c)}.values(),
                  key=lambda r: (r.method, r.preset))
    if not rows:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = _colours(len(rows))
    for ax, curve, title, ylabel in zip(axes, ("nc1", "align_base"),
                                        ("NC1 (lower = more collapsed)", "base-class alignment"),
                                        ("tr(Σ_W Σ_B⁺) / C", "mean cosine")):
        for row, colour in zip(rows, colours):
            if any(not math.isnan(v) for c in row.curves(curve) for v in c):
                _plot_curve(ax, row, curve, colour, scale=1.0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _finish(ax, fig, f"{bench.title}: {title}", ylabel, legend=curve == "align_base")
    return _png(fig)
