"""``fscil-bench list``: the benchmarks, methods and presets this installation has."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fscil_bench.cli.common import UserError


def cmd_list(args: argparse.Namespace) -> int:
    from fscil_bench.benchmarks.registry import benchmark_names, get_benchmark
    from fscil_bench.defaults import DATA_ROOT_ENV, default_cache_dir
    from fscil_bench.run.discovery import discover_methods
    from fscil_bench.run.limits import default_limits
    from fscil_bench.run.pools import make_pool
    from fscil_bench.run.workers import IsolationError, resolve_isolation

    print("Benchmarks:")
    for name in benchmark_names():
        spec = get_benchmark(name)
        print(f"  {spec.id:24s} {spec.description}")
    try:  # methods are imported by a worker, as `fscil-bench run` does
        level, _ = resolve_isolation(args.isolation)
    except IsolationError as exc:
        raise UserError(str(exc)) from exc
    data_root = os.environ.get(DATA_ROOT_ENV)
    limits = default_limits("quick")
    pool = make_pool(level, default_cache_dir(), [Path(data_root)] if data_root else [],
                     [Path(p).resolve() for p in args.plugin or []])
    try:
        registry = discover_methods(args.plugin or [], pool, limits.load_seconds, limits.memory_bytes)
    finally:
        if pool is not None:
            pool.close()
    print("Methods (presets):")
    for name, info in registry.methods.items():
        presets = ", ".join(info.presets or ["-"])
        print(f"  {name:24s} {presets:20s} {info.source}")
    for source, message in sorted(registry.errors.items()):
        print(f"error: {message}", file=sys.stderr)
    return 1 if registry.errors else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    lst = sub.add_parser("list", help="list benchmarks, methods and presets")
    lst.add_argument("--plugin", action="append", metavar="FILE.py")
    lst.add_argument("--isolation", choices=("auto", "sandbox", "process", "none"), default="auto",
                     help="how method code is imported to list it (as for fscil-bench run; default: auto)")
    lst.set_defaults(func=cmd_list)

