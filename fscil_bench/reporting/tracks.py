"""What a leaderboard says about its track: where the backbones' weights come from, and when the
data they were trained on holds the benchmark's classes.

Every table holds one track (:mod:`fscil_bench.results.tracks`); nothing is ranked across tables.
"""

from __future__ import annotations

from fscil_bench.reporting.collect import BenchmarkResults
from fscil_bench.results.tracks import SCRATCH


def _weights_text(weights: dict) -> str:
    sha = str(weights.get("sha256") or "")
    return f"{weights.get('name')} (sha256 {sha[:16]}..., trained on {weights.get('trained_on')})"


def track_lines(bench: BenchmarkResults) -> list[str]:
    """The legend's lines about the track of ``bench`` (and a warning for overlapping data)."""
    if bench.track == SCRATCH:
        return ["Track: from scratch. Backbones are trained on this benchmark's base session alone (or the "
                "extra data a row's notes name); runs that start from pretrained weights are in tables of their own."]
    weights = "; ".join(_weights_text(w) for w in bench.weights) or "not stated by the records"
    lines = [f"Track: {bench.track}. Backbones start from pretrained weights: {weights}. Rows are ranked within "
             "this track only: never compare them with another track's table."]
    if len(bench.weights) > 1:
        lines.append("Note: the records of this track used different weights files under one name (see the sha256s).")
    if bench.overlaps:
        lines.append(f"Warning: the data these weights were trained on contain this benchmark's classes "
                     f"({', '.join(bench.overlaps)}); its novel classes are not novel to the backbone, so these "
                     "are not few-shot results in the benchmark's sense.")
    return lines
