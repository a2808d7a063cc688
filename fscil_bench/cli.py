"""The ``fscil-bench`` command: run, list, report.

Errors a user can fix (unknown names, unwritable folders, missing data) print one line
starting with ``error:`` and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

DEFAULT_BENCHMARK = "glyphs100"


def default_cache_dir() -> Path:
    """``$FSCIL_BENCH_CACHE``, else ``$XDG_CACHE_HOME/fscil-bench``, else ``~/.cache/fscil-bench``."""
    if os.environ.get("FSCIL_BENCH_CACHE"):
        return Path(os.environ["FSCIL_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fscil-bench"


class UserError(Exception):
    """A problem with the command's input, reported as one line."""


def _split_names(values: list[str] | None) -> list[str]:
    return [n for v in values or [] for n in v.split(",") if n]


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but no CUDA GPU is available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}: {exc}") from exc


def cmd_run(args: argparse.Namespace) -> int:
    from .benchmarks import BenchmarkError, LoadOptions, get_benchmark
    from .progress import log, tqdm_progress
    from .registry import discover
    from .runner import RunOptions
    from .store import ResultsStore, StoreError
    from .suite import run_grid

    benchmarks = _split_names(args.benchmark) or [DEFAULT_BENCHMARK]
    for name in benchmarks:
        try:
            get_benchmark(name)
        except BenchmarkError as exc:
            raise UserError(str(exc)) from exc
    registry = discover(args.plugin or [])
    for source, message in sorted(registry.errors.items()):
        print(f"error: {message}" if source.endswith(".py") else f"error: method {source!r} failed to load: {message}", file=sys.stderr)
    methods = _split_names(args.methods) or registry.names()
    unknown = [m for m in methods if m not in registry.methods]
    if unknown:
        raise UserError(f"unknown method {', '.join(map(repr, unknown))}; available: {', '.join(registry.names())}")
    if not methods:
        raise UserError("no method to run")
    store = ResultsStore(args.output)
    try:
        store.check_writable()
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    device = _device(args.device)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    options = RunOptions(device=device, cache_dir=cache_dir, progress=tqdm_progress, log=log)
    load_options = LoadOptions(cache_dir=cache_dir, data_root=Path(args.data_root) if args.data_root else None, log=log)
    command = "fscil-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        outcomes = run_grid(benchmarks, methods, args.seeds, args.preset, registry, store, options, load_options,
                            force=args.force, command=command, echo=log)
    except BenchmarkError as exc:
        raise UserError(str(exc)) from exc
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs complete; records under {store.root}"
          + (f"; {len(failed)} failed (see their record.json)" if failed else ""))
    return 1 if failed or registry.errors else 0


def cmd_list(args: argparse.Namespace) -> int:
    from .benchmarks import benchmark_names, get_benchmark
    from .registry import discover

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


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_reports
    from .store import ResultsStore

    store = ResultsStore(args.runs)
    if not store.root.is_dir():
        raise UserError(f"no results folder at {store.root} (run 'fscil-bench run' first, or pass --runs)")
    command = "fscil-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        written = write_reports(store, Path(args.output), command=command)
    except OSError as exc:
        raise UserError(f"cannot write reports to {args.output}: {exc.strerror or exc}") from exc
    if not written:
        raise UserError(f"no records under {store.root}")
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from .benchmarks import BenchmarkError
    from .verify import verify_data

    try:
        return verify_data(args.benchmark, args.data_root, schedule=args.schedule, download=args.download)
    except BenchmarkError as exc:
        raise UserError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fscil-bench", description="Few-shot class-incremental learning benchmark suite.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run methods through a benchmark's sessions and store the results")
    run.add_argument("--benchmark", "-b", action="append", help=f"benchmark name(s), comma-separated (default: {DEFAULT_BENCHMARK})")
    run.add_argument("--methods", "-m", action="append", help="method name(s), comma-separated (default: all registered)")
    run.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    run.add_argument("--preset", default="quick", help="hyperparameter preset (default: quick)")
    run.add_argument("--plugin", action="append", metavar="FILE.py", help="a Python file defining extra methods")
    run.add_argument("--output", "-o", default="runs", help="results folder (default: ./runs)")
    run.add_argument("--cache-dir", help="cache for datasets and base models (default: $FSCIL_BENCH_CACHE or ~/.cache/fscil-bench)")
    run.add_argument("--data-root", default=os.environ.get("FSCIL_DATA_ROOT"), help="folder holding real datasets (default: $FSCIL_DATA_ROOT)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    run.add_argument("--force", action="store_true", help="recompute runs that are already complete")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list benchmarks, methods and presets")
    lst.add_argument("--plugin", action="append", metavar="FILE.py")
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="write leaderboards from the results folder")
    rep.add_argument("--runs", default="runs", help="results folder (default: ./runs)")
    rep.add_argument("--output", "-o", default="leaderboards", help="report folder (default: ./leaderboards)")
    rep.set_defaults(func=cmd_report)

    data = sub.add_parser("data", help="check real data sets on disk").add_subparsers(dest="data_command", required=True)
    ver = data.add_parser("verify", help="check a data set's layout, counts, class order and every scheduled sample")
    ver.add_argument("--benchmark", "-b", required=True, help="cifar100, mini_imagenet, cub200 (or a custom .yaml naming one)")
    ver.add_argument("--data-root", default=os.environ.get("FSCIL_DATA_ROOT"), help="folder holding real datasets (default: $FSCIL_DATA_ROOT)")
    ver.add_argument("--schedule", help="a schedule file to check against instead of the shipped one")
    ver.add_argument("--download", action="store_true", help="download the data set first if it is missing (CIFAR-100 only)")
    ver.set_defaults(func=cmd_data_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
