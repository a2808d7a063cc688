"""Leaderboards from the results store: one Markdown table and one CSV per benchmark.

Rows aggregate the seeds of one (method, preset): mean +- sample std over seeds, with n. A
failed run or a missing seed is never dropped silently: the row says how many seeds completed
and which failed. Output is deterministic (byte-identical for the same records).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from .data.cache import atomic_write_text
from .metrics import METRIC_DEFINITIONS
from .store import ResultsStore

#: Columns of the table: (key in the metrics dict, column title, index into a per-session list or None).
SUMMARY_COLUMNS = [
    ("avg_acc", "Avg", None),
    ("last_acc", "Last", None),
    ("pd", "PD", None),
    ("base_acc", "Base (last)", -1),
    ("novel_acc", "Novel (last)", -1),
    ("hm", "HM (last)", -1),
    ("forgetting_max", "Forget (max)", None),
    ("forgetting_initial", "Forget (init)", None),
]


@dataclass
class MethodRow:
    method: str
    preset: str
    seeds: list[int]
    failed: dict[int, str]
    values: dict[str, list[float]]  # column -> one value per completed seed
    seconds: list[float]
    notes: list[str]


def _pick(metrics: dict[str, Any], key: str, index: int | None) -> float:
    value = metrics.get(key)
    if index is not None:
        value = value[index] if value else None
    return float("nan") if value is None else float(value)


def collect(store: ResultsStore) -> dict[str, dict[tuple[str, str], MethodRow]]:
    """Group records by benchmark id, then by (method, preset)."""
    tables: dict[str, dict[tuple[str, str], MethodRow]] = defaultdict(dict)
    for _, rec in store.records():
        bench, method, preset, seed = rec["benchmark"]["id"], rec["method"]["name"], rec["preset"], rec["seed"]
        row = tables[bench].setdefault((method, preset), MethodRow(method, preset, [], {}, defaultdict(list), [], []))
        notes = []
        if rec["method"].get("oracle"):
            notes.append("oracle")
        if rec["method"].get("extra_data"):
            notes.append(f"extra data: {rec['method']['extra_data']}")
        for n in notes:
            if n not in row.notes:
                row.notes.append(n)
        if rec["status"] != "completed":
            err = rec.get("error") or {}
            row.failed[seed] = f"{err.get('type', 'error')} in session {err.get('session')}"
            continue
        row.seeds.append(seed)
        row.seconds.append(rec["timing"].get("total_seconds", float("nan")))
        m = rec["metrics"]
        for t, acc in enumerate(m["session_acc"]):
            row.values[f"S{t}"].append(float(acc))
        for key, title, index in SUMMARY_COLUMNS:
            row.values[title].append(_pick(m, key, index))
    return tables


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _cell(values: Sequence[float], scale: float = 100.0) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return ""
    return f"{scale * mean:.2f} ± {scale * std:.2f}" if len(values) > 1 else f"{scale * mean:.2f}"


def frame(rows: dict[tuple[str, str], MethodRow]) -> tuple[pd.DataFrame, list[str]]:
    """A numeric table (means and stds in percent) plus the display column order."""
    sessions = sorted({c for r in rows.values() for c in r.values if c.startswith("S")}, key=lambda c: int(c[1:]))
    columns = sessions + [title for _, title, _ in SUMMARY_COLUMNS]
    records = []
    for (method, preset), row in sorted(rows.items()):
        rec: dict[str, Any] = {"method": method, "preset": preset, "n": len(row.seeds),
                               "seeds": " ".join(map(str, sorted(row.seeds))),
                               "failed": "; ".join(f"seed {s}: {why}" for s, why in sorted(row.failed.items())),
                               "notes": "; ".join(row.notes)}
        for col in columns:
            mean, std = mean_std(row.values.get(col, []))
            rec[f"{col} mean"] = round(100 * mean, 4) if not math.isnan(mean) else None
            rec[f"{col} std"] = round(100 * std, 4) if not math.isnan(std) else None
        mean_s, _ = mean_std(row.seconds)
        rec["seconds mean"] = round(mean_s, 2) if not math.isnan(mean_s) else None
        records.append(rec)
    return pd.DataFrame.from_records(records), columns


def markdown_table(rows: dict[tuple[str, str], MethodRow], columns: list[str]) -> str:
    headers = ["Method", "Preset", "n"] + [c.replace("S", "A", 1) if c.startswith("S") and c[1:].isdigit() else c for c in columns] + ["Time (s)", "Notes"]
    body = []
    for (method, preset), row in sorted(rows.items(), key=lambda kv: -np.nan_to_num(mean_std(kv[1].values.get("Avg", []))[0], nan=-1)):
        notes = list(row.notes)
        if row.failed:
            notes.append("failed: " + ", ".join(f"seed {s} ({why})" for s, why in sorted(row.failed.items())))
        body.append([method, preset, len(row.seeds)] + [_cell(row.values.get(c, [])) for c in columns]
                    + [_cell(row.seconds, scale=1.0), "; ".join(notes)])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def write_reports(store: ResultsStore, out_dir: Path, command: str | None = None) -> list[Path]:
    """Write ``<benchmark>.md`` and ``<benchmark>.csv`` per benchmark into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for bench, rows in sorted(collect(store).items()):
        df, columns = frame(rows)
        stem = bench.replace("@", "-v")
        csv_path = out_dir / f"{stem}.csv"
        atomic_write_text(csv_path, df.to_csv(index=False, lineterminator="\n"))
        lines = [f"# {bench}", "", "Top-1 accuracy (%) after each session, mean ± std over seeds (n = seeds completed).", ""]
        lines.append(markdown_table(rows, columns))
        lines += ["", "## Definitions", ""]
        lines += [f"- **{k}**: {v}" for k, v in METRIC_DEFINITIONS.items()]
        if command:
            lines += ["", f"Generated by `{command}`."]
        md_path = out_dir / f"{stem}.md"
        atomic_write_text(md_path, "\n".join(lines) + "\n")
        written += [md_path, csv_path]
    return written
