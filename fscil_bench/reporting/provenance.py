"""Where a leaderboard's numbers come from, taken from the records themselves.

The run commands, code versions (package version and git commit), hardware, presets (with the
overrides of a changed one) and the first start / last finish times of the runs. Nothing here
reads the clock, so a report is byte-identical for the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fscil_bench import __version__


@dataclass(frozen=True)
class Provenance:
    report_command: str | None
    reporter_version: str
    run_commands: list[str]
    code_versions: list[str]
    hardware: list[str]
    presets: list[str]
    first_started: str | None
    last_finished: str | None
    num_records: int


def code_version(record: dict[str, Any]) -> str:
    env = record.get("environment") or {}
    text = f"fscil-bench {env.get('fscil_bench', '?')} (git {env.get('git_commit') or 'unknown'})"
    libs = ", ".join(f"{name} {env[name]}" for name in ("python", "torch", "torchvision", "numpy") if env.get(name))
    return f"{text}; {libs}" if libs else text


def hardware_text(record: dict[str, Any]) -> str:
    hw = record.get("hardware") or {}
    if not hw:
        return "unknown"
    device = hw.get("device", "?")
    chip = hw.get("gpu") or hw.get("processor") or "?"
    parts = [f"{device}: {chip}"]
    if hw.get("cpu_count"):
        parts.append(f"{hw['cpu_count']} CPUs")
    if hw.get("torch_threads"):
        parts.append(f"{hw['torch_threads']} torch threads")
    if hw.get("platform"):
        parts.append(str(hw["platform"]))
    return ", ".join(parts)


def preset_text(record: dict[str, Any]) -> str:
    """The record's preset; a preset changed by overrides with its changes (``quick+1a2b3c4d (quick
    with base.epochs=20)``)."""
    preset = str(record.get("preset"))
    config = record.get("config") or {}
    overrides = config.get("overrides") or {}
    if not overrides:
        return preset
    changes = ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    return f"{preset} ({config.get('preset', '?')} with {changes})"


def gather(records: Iterable[dict[str, Any]], report_command: str | None = None) -> Provenance:
    """The provenance of ``records`` (each list sorted and without repeats)."""
    records = list(records)
    started = sorted(r["started_at"] for r in records if r.get("started_at"))
    finished = sorted(r["finished_at"] for r in records if r.get("finished_at"))
    return Provenance(
        report_command=report_command,
        reporter_version=__version__,
        run_commands=sorted({r["command"] for r in records if r.get("command")}),
        code_versions=sorted({code_version(r) for r in records}),
        hardware=sorted({hardware_text(r) for r in records}),
        presets=sorted({preset_text(r) for r in records}),
        first_started=started[0] if started else None,
        last_finished=finished[-1] if finished else None,
        num_records=len(records),
    )


def as_items(p: Provenance) -> list[tuple[str, list[str]]]:
    """(label, values) pairs for display; empty values are shown as "unknown"."""
    dates = f"{p.first_started or 'unknown'} to {p.last_finished or 'unknown'}"
    return [
        ("Report command", [p.report_command or f"write_reports (fscil-bench {p.reporter_version})"]),
        ("Run commands", p.run_commands or ["unknown"]),
        ("Code versions", p.code_versions or ["unknown"]),
        ("Hardware", p.hardware or ["unknown"]),
        ("Presets", p.presets or ["unknown"]),
        ("Runs", [f"{p.num_records} records, started/finished {dates}"]),
    ]


def to_markdown(p: Provenance) -> list[str]:
    lines = []
    for label, values in as_items(p):
        if len(values) == 1:
            lines.append(f"- {label}: `{values[0]}`" if "command" in label.lower() else f"- {label}: {values[0]}")
        else:
            lines.append(f"- {label}:")
            lines += [f"  - `{v}`" if "command" in label.lower() else f"  - {v}" for v in values]
    return lines
