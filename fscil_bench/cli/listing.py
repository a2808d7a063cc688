"""``fscil-bench list``: the benchmarks, methods and presets this installation has."""

from __future__ import annotations

import argparse
import sys


def cmd_list(args: argparse.Namespace) -> int:
    from fscil_bench.benchmarks.registry import benchmark_names, get_benchmark
    from fscil_bench.run.methods import discover

    print("Benchmarks:")
    for name in benchmark_names():
        spec = get_benchmark(name)
        print(f"  {spec.id:24s} {spec.description}")
    registry = discover(args.plugin or [])
    print("Methods (presets):")
    for name in registry.names():
        cls = registry.methods[name]
        presets = ", ".join(getattr(cls, "presets", {}) or ["-"])
        print(f"  {name:24s} {presets:20s} {registry.sources[name]}")
    for source, message in sorted(registry.errors.items()):
        print(f"error: {message}", file=sys.stderr)
    return 1 if registry.errors else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    lst = sub.add_parser("list", help="list benchmarks, methods and presets")
    lst.add_argument("--plugin", action="append", metavar="FILE.py")
    lst.set_defaults(func=cmd_list)

