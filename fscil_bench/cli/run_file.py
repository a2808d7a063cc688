"""Run files: the options of ``fscil-bench run`` in a YAML file, to check in next to a paper.

A run file's keys are the long options of ``fscil-bench run`` without their dashes (``benchmark``,
``methods``, ``preset``, ``seeds``, ``output``, ``executor``, ``workers``, ``slurm-time``, ...;
plural spellings such as ``benchmarks``, ``presets`` and ``plugins`` are read too, and ``_``
may stand for ``-``), plus ``overrides``: the ``--set`` assignments, as a mapping (nested
mappings are read as dotted paths; ``METHOD:KEY`` scopes one to a method) or a list of
``KEY=VALUE`` strings. For example::

    benchmarks: [cifar100, mini_imagenet]
    methods: [prototype, etf]
    preset: paper
    seeds: [0, 1, 2]
    overrides:
      base.epochs: 20
      etf:session.steps: 50
    executor: local
    workers: 2
    output: runs/paper-20-epochs

Options given on the command line win over the file (``--set`` assignments are applied after
the file's, so a key set in both takes the command line's value). Relative paths in the file
(``output``, ``plugin``, ``cache-dir``, ``data-root``, ``slurm-folder``) are relative to the
file's folder. Records name the file and its sha256.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fscil_bench.cache import sha256_file
from fscil_bench.cli.common import UserError
from fscil_bench.registry import did_you_mean
from fscil_bench.run.overrides import Override


def _names(value: Any) -> list[str] | None:
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, list) and all(isinstance(v, str) and v for v in items):
        return [v.strip() for v in items if v.strip()]
    return None


def _ints(value: Any) -> list[int] | None:
    items = [value] if isinstance(value, int) else value
    if isinstance(items, list) and items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return list(items)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


#: option -> (argparse destination, reader returning None for a bad value, what the value must be, is a path).
OPTIONS: dict[str, tuple[str, Callable[[Any], Any], str, bool]] = {
    "benchmark": ("benchmark", _names, "a list of benchmark names", False),
    "methods": ("methods", _names, "a list of method names", False),
    "preset": ("preset", _names, "a preset name or a list of them", False),
    "seeds": ("seeds", _ints, "a list of integers", False),
    "plugin": ("plugin", _names, "a list of .py files", True),
    "output": ("output", _text, "a folder", True),
    "cache-dir": ("cache_dir", _text, "a folder", True),
    "data-root": ("data_root", _text, "a folder", True),
    "device": ("device", _text, "a device name", False),
    "bf16": ("bf16", _flag, "true or false", False),
    "executor": ("executor", _text, "inline, local or slurm", False),
    "workers": ("workers", _int, "an integer", False),
    "sync-batchnorm": ("sync_batchnorm", _flag, "true or false", False),
    "slurm-partition": ("slurm_partition", _text, "a partition name", False),
    "slurm-gpus": ("slurm_gpus", _int, "an integer", False),
    "slurm-time": ("slurm_time", _int, "an integer (minutes)", False),
    "slurm-mem": ("slurm_mem", _int, "an integer (GB)", False),
    "slurm-cpus": ("slurm_cpus", _int, "an integer", False),
    "slurm-folder": ("slurm_folder", _text, "a folder", True),
}
ALIASES = {"benchmarks": "benchmark", "presets": "preset", "plugins": "plugin", "seed": "seeds", "set": "overrides"}


@dataclass
class RunFile:
    """A run file as read: its path, sha256, options (argparse destination -> value) and overrides."""

    path: Path
    sha256: str
    options: dict[str, Any] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)

    def provenance(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}


def read_run_file(path: str | Path) -> RunFile:
    """Read and check a run file; any problem is a one-line :class:`UserError`."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except OSError as exc:
        raise UserError(f"cannot read run file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"run file {path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserError(f"run file {path} must be a mapping of options (benchmark: ..., methods: ...), not a {type(data).__name__}")
    run_file = RunFile(path, sha256_file(path))
    valid = [*OPTIONS, "overrides"]
    for raw_key, value in data.items():
        key = ALIASES.get(str(raw_key).replace("_", "-"), str(raw_key).replace("_", "-"))
        if key == "overrides":
            run_file.overrides = _overrides(value, path)
            continue
        if key not in OPTIONS:
            raise UserError(f"run file {path}: unknown option {raw_key!r}{did_you_mean(str(raw_key), valid)}; "
                            f"valid: {', '.join(valid)}")
        dest, read, expected, is_path = OPTIONS[key]
        parsed = read(value)
        if parsed is None:
            raise UserError(f"run file {path}: {raw_key} must be {expected}, not {value!r}")
        if is_path:
            parsed = [str(path.parent / p) for p in parsed] if isinstance(parsed, list) else str(path.parent / parsed)
        run_file.options[dest] = parsed
    return run_file


def _overrides(value: Any, path: Path) -> list[Override]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        try:
            return [Override.parse(v) for v in value]
        except ValueError as exc:
            raise UserError(f"run file {path}: {exc}") from exc
    if not isinstance(value, Mapping):
        raise UserError(f"run file {path}: overrides must be a mapping (base.epochs: 20) or a list of KEY=VALUE strings")
    out = []
    for target, v in _flatten(value):
        method, _, key = target.rpartition(":")
        out.append(Override(key, v, method or None))
    return out


def _flatten(mapping: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in mapping.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        items.extend(_flatten(v, path) if isinstance(v, Mapping) and v else [(path, v)])
    return items


def merge(args: argparse.Namespace, run_file: RunFile | None, defaults: Mapping[str, Any]) -> argparse.Namespace:
    """``args`` with each option not given on the command line (None) taken from ``run_file``,
    else from ``defaults``; ``args.overrides`` becomes the file's overrides, then the command line's."""
    merged = argparse.Namespace(**vars(args))
    from_file = run_file.options if run_file else {}
    for dest, default in defaults.items():
        if getattr(merged, dest, None) is None:
            setattr(merged, dest, from_file.get(dest, default))
    try:
        cli = [Override.parse(text) for text in args.set or []]
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    merged.overrides = [*(run_file.overrides if run_file else []), *cli]
    merged.run_file = run_file.provenance() if run_file else None
    return merged
