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
    from . import distributed
    from .benchmarks import BenchmarkError, LoadOptions, get_benchmark
    from .progress import log, tqdm_progress
    from .registry import discover
    from .runner import RunOptions, no_progress
    from .store import ResultsStore, StoreError
    from .suite import run_grid

    # Slurm jobs use the GPUs they ask for (--slurm-gpus), whatever this machine has.
    device = _device("cpu" if args.executor == "slurm" else args.device)
    _check_parallel_options(args, device)
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
    device = distributed.init_from_env(device)  # under torchrun: join the other ranks
    distributed.SYNC_BATCHNORM = args.sync_batchnorm
    speaks = distributed.is_main_process()  # under torchrun, rank 0 speaks for all ranks
    if not speaks:
        log, tqdm_progress = (lambda msg: None), no_progress
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    options = RunOptions(device=device, cache_dir=cache_dir, progress=tqdm_progress, log=log)
    load_options = LoadOptions(cache_dir=cache_dir, data_root=Path(args.data_root) if args.data_root else None, log=log)
    command = "fscil-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.executor != "inline":
        code = _run_on_executor(args, benchmarks, methods, store, device, cache_dir, load_options, command)
        return max(code, 1 if registry.errors else 0)
    try:
        outcomes = run_grid(benchmarks, methods, args.seeds, args.preset, registry, store, options, load_options,
                            force=args.force, command=command, echo=log)
    except BenchmarkError as exc:
        raise UserError(str(exc)) from exc
    finally:
        distributed.shutdown()
    failed = [o for o in outcomes if o.status == "failed"]
    if speaks:
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs complete; records under {store.root}"
              + (f"; {len(failed)} failed (see their record.json)" if failed else ""))
    return 1 if failed or registry.errors else 0


def _check_parallel_options(args: argparse.Namespace, device) -> None:
    """Reject executor, Slurm and data-parallel options that cannot work together."""
    from .distributed import launched_by_torchrun

    if args.executor != "inline" and launched_by_torchrun():
        raise UserError(f"--executor {args.executor} cannot run under torchrun; use --executor inline "
                        "(or --slurm-gpus N for data-parallel Slurm jobs)")
    if args.sync_batchnorm and device.type != "cuda" and not (args.executor == "slurm" and args.slurm_gpus):
        raise UserError("--sync-batchnorm needs CUDA GPUs (SyncBatchNorm has no CPU implementation)")
    for name in ("workers", "slurm_time", "slurm_mem", "slurm_cpus"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    if args.slurm_gpus < 0:
        raise UserError(f"--slurm-gpus must be 0 or more, not {args.slurm_gpus}")


def _run_on_executor(args: argparse.Namespace, benchmarks: list[str], methods: list[str], store, device, cache_dir: Path,
                     load_options, command: str) -> int:
    """Run (``local``) or submit (``slurm``) one job per unfinished (benchmark, method, seed)."""
    from .benchmarks import BenchmarkError, get_benchmark
    from .executors import ExecutorError, GridJob, SlurmOptions, import_submitit, run_local, submit_slurm
    from .store import RunKey

    try:
        import_submitit()
    except ExecutorError as exc:
        raise UserError(str(exc)) from exc
    workers = args.workers or 1
    template = GridJob(benchmark="", method="", seed=0, preset=args.preset, output=str(store.root.resolve()),
                       cache_dir=str(cache_dir.resolve()), data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
                       device=str(device), plugins=tuple(str(Path(p).resolve()) for p in args.plugin or []), force=args.force,
                       command=command, threads=max(1, (os.cpu_count() or 1) // workers) if args.executor == "local" else None,
                       sync_batchnorm=args.sync_batchnorm)
    jobs, skipped = [], 0
    for name in benchmarks:
        spec = get_benchmark(name)
        for method in methods:
            for seed in args.seeds:
                key = RunKey(spec.id, method, args.preset, seed)
                if not args.force and store.is_complete(key):
                    skipped += 1
                    print(f"{spec.id} {method} [{args.preset}] seed {seed}: already complete, skipped")
                else:
                    jobs.append(GridJob(**{**template.__dict__, "benchmark": name, "method": method, "seed": seed}))
    try:
        if args.executor == "slurm":
            folder = Path(args.slurm_folder).resolve()
            handles = submit_slurm(jobs, SlurmOptions(folder=str(folder), partition=args.slurm_partition, gpus=args.slurm_gpus,
                                                      time_min=args.slurm_time, mem_gb=args.slurm_mem,
                                                      cpus_per_task=args.slurm_cpus, parallelism=args.workers))
            ids = sorted({h.job_id.split("_")[0] for h in handles})
            print(f"submitted {len(handles)} runs ({skipped} already complete) as Slurm job {', '.join(ids) or '-'}; "
                  f"logs under {folder}; records under {store.root}. Rerun this command to resubmit unfinished runs.")
            return 0
        for name in benchmarks:  # build the data caches once, before the workers read them
            if any(j.benchmark == name for j in jobs):
                get_benchmark(name).load(load_options)
        gpus = 0
        if device.type == "cuda":
            import torch

            gpus = torch.cuda.device_count()
        results = run_local(jobs, workers, Path(args.slurm_folder).resolve() / "local", gpus=gpus)
    except (ExecutorError, BenchmarkError) as exc:
        raise UserError(str(exc)) from exc
    bad = [r for r in results if r[1] in ("failed", "error")]
    print(f"{len(results) - len(bad) + skipped} of {len(results) + skipped} runs complete; records under {store.root}"
          + (f"; {len(bad)} failed (see their record.json or the worker logs)" if bad else ""))
    return 1 if bad else 0


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
    from .report import ReportError, write_reports
    from .store import ResultsStore

    store = ResultsStore(args.runs)
    if not store.root.is_dir():
        raise UserError(f"no results folder at {store.root} (run 'fscil-bench run' first, or pass --runs)")
    command = "fscil-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        written = write_reports(store, Path(args.output), command=command, heatmap_method=args.heatmap_method)
    except ReportError as exc:
        raise UserError(str(exc)) from exc
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
    par = run.add_argument_group("several processes, GPUs and clusters")
    par.add_argument("--executor", choices=("inline", "local", "slurm"), default="inline",
                     help="inline: in this process (default; also under torchrun); local: one process per run, "
                          "--workers at a time; slurm: one Slurm job array, one task per run (needs submitit)")
    par.add_argument("--workers", type=int, help="runs at a time (local: processes, default 1; slurm: array parallelism)")
    par.add_argument("--sync-batchnorm", action="store_true", help="data-parallel training: BatchNorm over the global batch (GPUs only)")
    par.add_argument("--slurm-partition", help="Slurm partition (default: the cluster's default)")
    par.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per run; more than 1 trains data-parallel (default: 1)")
    par.add_argument("--slurm-time", type=int, default=240, metavar="MINUTES", help="time limit per run (default: 240)")
    par.add_argument("--slurm-mem", type=int, default=32, metavar="GB", help="memory per run (default: 32)")
    par.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per process (default: 8)")
    par.add_argument("--slurm-folder", default="submitit-logs", help="job scripts and logs, on a shared file system (default: ./submitit-logs)")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list benchmarks, methods and presets")
    lst.add_argument("--plugin", action="append", metavar="FILE.py")
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="write leaderboards from the results folder")
    rep.add_argument("--runs", default="runs", help="results folder (default: ./runs)")
    rep.add_argument("--output", "-o", default="leaderboards", help="report folder (default: ./leaderboards)")
    rep.add_argument("--heatmap-method", metavar="NAME",
                     help="method whose session x class-group accuracy matrix is drawn (default: the best "
                          "non-oracle method by average accuracy)")
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
