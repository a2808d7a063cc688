"""``fscil-bench run``: run methods through benchmarks' sessions, inline, on local workers or on Slurm.

Options may come from a run file (``--config FILE.yaml``, :mod:`fscil_bench.cli.run_file`); the
command line wins. ``--set`` changes a preset's values (:mod:`fscil_bench.run.overrides`), and
``--dry-run`` prints the grid, each run's recipe and its base models without training anything
(:mod:`fscil_bench.run.plan`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fscil_bench.cli.common import UserError, command_line, parse_device, split_names
from fscil_bench.cli.run_file import merge, read_run_file
from fscil_bench.defaults import DATA_ROOT_ENV, default_cache_dir

DEFAULT_BENCHMARK = "glyphs100"
#: The defaults of the options a run file may set (the parser's own defaults are None, so that
#: an option given on the command line can be told from one left out).
DEFAULTS = {"benchmark": [DEFAULT_BENCHMARK], "methods": None, "preset": ["quick"], "seeds": [0], "plugin": [],
            "output": "runs", "cache_dir": None, "data_root": None, "weights_dir": None, "device": "auto",
            "bf16": False, "executor": "inline", "workers": None, "sync_batchnorm": False, "slurm_partition": None,
            "slurm_gpus": 1, "slurm_time": 240, "slurm_mem": 32, "slurm_cpus": 8, "slurm_folder": "submitit-logs"}
EXAMPLES = """examples:
  fscil-bench run --methods prototype --set base.epochs=20 --set 'base.milestones=[12,16]'
      change a preset's values (dotted paths into its settings; METHOD:KEY=VALUE for one method only);
      the runs are keyed as quick+<digest of the changes>, apart from the preset's own
  fscil-bench run --config paper.yaml --seeds 0
      take benchmarks, methods, presets, seeds, overrides, executor and output from a YAML file
      (keys: the long options above; overrides: {base.epochs: 20}); the command line wins
  fscil-bench run --methods prototype,etf --seeds 0 1 2 --dry-run
      print the runs that would be skipped or run, each run's recipe, and which base models would
      be trained or loaded from the cache; trains nothing, writes no record
"""


def cmd_run(args: argparse.Namespace) -> int:
    from fscil_bench import distributed
    from fscil_bench.benchmarks.benchmark import BenchmarkError, LoadOptions
    from fscil_bench.benchmarks.registry import get_benchmark
    from fscil_bench.models.weights import WeightsError
    from fscil_bench.protocol import no_progress
    from fscil_bench.results.store import ResultsStore, StoreError
    from fscil_bench.run.grid import run_grid
    from fscil_bench.run.methods import discover
    from fscil_bench.run.overrides import PresetError, resolve_grid
    from fscil_bench.run.progress import log, tqdm_progress
    from fscil_bench.run.runner import RunOptions

    args = merge(args, read_run_file(args.config) if args.config else None,
                 {**DEFAULTS, "data_root": os.environ.get(DATA_ROOT_ENV)})
    if args.executor not in ("inline", "local", "slurm"):
        raise UserError(f"--executor must be inline, local or slurm, not {args.executor!r}")
    # Slurm jobs use the GPUs they ask for (--slurm-gpus), whatever this machine has.
    device = parse_device("cpu" if args.executor == "slurm" or args.dry_run else args.device)
    _check_parallel_options(args, device)
    benchmarks = split_names(args.benchmark) or [DEFAULT_BENCHMARK]
    specs = []
    for name in benchmarks:
        try:
            specs.append(get_benchmark(name))
        except BenchmarkError as exc:
            raise UserError(str(exc)) from exc
    registry = discover(args.plugin or [])
    for source, message in sorted(registry.errors.items()):
        print(f"error: {message}" if source.endswith(".py") else f"error: method {source!r} failed to load: {message}", file=sys.stderr)
    methods = split_names(args.methods) or registry.names()
    unknown = [m for m in methods if m not in registry.methods]
    if unknown:
        raise UserError(f"unknown method {', '.join(map(repr, unknown))}; available: {', '.join(registry.names())}")
    if not methods:
        raise UserError("no method to run")
    presets = split_names(args.preset) or DEFAULTS["preset"]
    try:  # every preset and override is checked before anything runs
        resolved = resolve_grid({m: registry.get(m) for m in methods}, presets, [s.family for s in specs], args.overrides)
    except PresetError as exc:
        raise UserError(str(exc)) from exc
    store = ResultsStore(args.output)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    load_options = LoadOptions(cache_dir=cache_dir, data_root=Path(args.data_root) if args.data_root else None, log=log)
    if args.dry_run:
        return _dry_run(args, benchmarks, methods, presets, registry, resolved, store, load_options)
    try:
        store.check_writable()
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    device = distributed.init_from_env(device)  # under torchrun: join the other ranks
    speaks = distributed.is_main_process()  # under torchrun, rank 0 speaks for all ranks
    if not speaks:
        log, tqdm_progress = (lambda msg: None), no_progress
    options = RunOptions(device=device, cache_dir=cache_dir, progress=tqdm_progress, log=log, bf16=args.bf16,
                         sync_batchnorm=args.sync_batchnorm,
                         weights_dir=Path(args.weights_dir) if args.weights_dir else None)
    command = command_line()
    if args.executor != "inline":
        code = _run_on_executor(args, benchmarks, methods, presets, resolved, store, device, cache_dir, load_options, command)
        return max(code, 1 if registry.errors else 0)
    outcomes = []
    try:
        for preset in presets:
            outcomes += run_grid(benchmarks, methods, args.seeds, preset, registry, store, options, load_options,
                                 force=args.force, command=command, echo=log, overrides=args.overrides,
                                 run_file=args.run_file)
    except (BenchmarkError, WeightsError) as exc:
        raise UserError(str(exc)) from exc
    finally:
        distributed.shutdown()
    failed = [o for o in outcomes if o.status == "failed"]
    if speaks:
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs complete; records under {store.root}"
              + (f"; {len(failed)} failed (see their record.json)" if failed else ""))
    return 1 if failed or registry.errors else 0


def _dry_run(args: argparse.Namespace, benchmarks: list[str], methods: list[str], presets: list[str], registry,
             resolved, store, load_options) -> int:
    """Print what the command would do; train nothing, write no record."""
    from fscil_bench.benchmarks.benchmark import LoadOptions
    from fscil_bench.run.plan import plan_grid

    quiet = LoadOptions(load_options.cache_dir, load_options.data_root, log=lambda msg: None)
    plan = plan_grid(benchmarks, methods, presets, args.seeds, registry.methods, resolved, store, quiet, force=args.force)
    print("\n".join(plan.lines()))
    return 1 if registry.errors else 0


def _check_parallel_options(args: argparse.Namespace, device) -> None:
    """Reject executor, Slurm and data-parallel options that cannot work together."""
    from fscil_bench.distributed import launched_by_torchrun

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


def _run_on_executor(args: argparse.Namespace, benchmarks: list[str], methods: list[str], presets: list[str], resolved,
                     store, device, cache_dir: Path, load_options, command: str) -> int:
    """Run (``local``) or submit (``slurm``) one job per unfinished (benchmark, method, seed)."""
    from fscil_bench.benchmarks.benchmark import BenchmarkError
    from fscil_bench.benchmarks.registry import get_benchmark
    from fscil_bench.results.store import RunKey
    from fscil_bench.run.executors import (
        ExecutorError,
        GridJob,
        SlurmOptions,
        import_submitit,
        run_local,
        submit_slurm,
    )

    try:
        import_submitit()
    except ExecutorError as exc:
        raise UserError(str(exc)) from exc
    workers = args.workers or 1
    template = GridJob(benchmark="", method="", seed=0, preset="", output=str(store.root.resolve()),
                       cache_dir=str(cache_dir.resolve()), data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
                       device=str(device), plugins=tuple(str(Path(p).resolve()) for p in args.plugin or []), force=args.force,
                       command=command, threads=max(1, (os.cpu_count() or 1) // workers) if args.executor == "local" else None,
                       sync_batchnorm=args.sync_batchnorm, bf16=args.bf16, overrides=tuple(args.overrides),
                       run_file=tuple(args.run_file.items()) if args.run_file else None,
                       weights_dir=str(Path(args.weights_dir).resolve()) if args.weights_dir else None)
    jobs, skipped = [], 0
    for name in benchmarks:
        spec = get_benchmark(name)
        for method in methods:
            for preset in presets:
                for seed in args.seeds:
                    chosen = resolved[(spec.family, method, preset)]
                    key = RunKey(spec.id, method, chosen.id, seed, track=chosen.track)
                    if not args.force and store.is_complete(key):
                        skipped += 1
                        print(f"{key.describe()}: already complete, skipped")
                    else:
                        jobs.append(GridJob(**{**template.__dict__, "benchmark": name, "method": method, "seed": seed,
                                               "preset": preset}))
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    # Defaults are None here and applied after the run file (DEFAULTS), so the command line wins over it.
    run = sub.add_parser("run", help="run methods through a benchmark's sessions and store the results",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--benchmark", "-b", action="append", help=f"benchmark name(s), comma-separated (default: {DEFAULT_BENCHMARK})")
    run.add_argument("--methods", "-m", action="append", help="method name(s), comma-separated (default: all registered)")
    run.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0)")
    run.add_argument("--preset", action="append", help="hyperparameter preset(s), comma-separated (default: quick)")
    run.add_argument("--set", action="append", metavar="[METHOD:]KEY=VALUE",
                     help="change a value of the preset, e.g. base.epochs=20 (repeatable; see the examples below)")
    run.add_argument("--config", metavar="FILE.yaml", help="read options from a run file (the command line wins)")
    run.add_argument("--dry-run", action="store_true", help="print what would run and be trained, and each run's recipe; run nothing")
    run.add_argument("--plugin", action="append", metavar="FILE.py", help="a Python file defining extra methods")
    run.add_argument("--output", "-o", help="results folder (default: ./runs)")
    run.add_argument("--cache-dir", help="cache for datasets and base models (default: $FSCIL_BENCH_CACHE or ~/.cache/fscil-bench)")
    run.add_argument("--data-root", help=f"folder holding real datasets (default: ${DATA_ROOT_ENV})")
    run.add_argument("--weights-dir", help="folder of known pretrained weights files (default: <cache>/weights; "
                                           "see 'fscil-bench weights list')")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    run.add_argument("--force", action="store_true", help="recompute runs that are already complete")
    run.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                     help="train under bfloat16 autocast (faster on recent GPUs; recorded in each record; default: float32)")
    par = run.add_argument_group("several processes, GPUs and clusters")
    par.add_argument("--executor", choices=("inline", "local", "slurm"),
                     help="inline: in this process (default; also under torchrun); local: one process per run, "
                          "--workers at a time; slurm: one Slurm job array, one task per run (needs submitit)")
    par.add_argument("--workers", type=int, help="runs at a time (local: processes, default 1; slurm: array parallelism)")
    par.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction,
                     help="data-parallel training: BatchNorm over the global batch (GPUs only)")
    par.add_argument("--slurm-partition", help="Slurm partition (default: the cluster's default)")
    par.add_argument("--slurm-gpus", type=int, help="GPUs per run; more than 1 trains data-parallel (default: 1)")
    par.add_argument("--slurm-time", type=int, metavar="MINUTES", help="time limit per run (default: 240)")
    par.add_argument("--slurm-mem", type=int, metavar="GB", help="memory per run (default: 32)")
    par.add_argument("--slurm-cpus", type=int, help="CPUs per process (default: 8)")
    par.add_argument("--slurm-folder", help="job scripts and logs, on a shared file system (default: ./submitit-logs)")
    run.set_defaults(func=cmd_run)
