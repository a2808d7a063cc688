"""Run a grid of (benchmark, method, seed, split, order) runs into a results store, skipping finished ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fscil_bench import distributed
from fscil_bench.benchmarks.benchmark import Benchmark, LoadOptions
from fscil_bench.benchmarks.registry import get_benchmark
from fscil_bench.benchmarks.variants import benchmark_variant
from fscil_bench.models.weights import WeightsError, resolve_weights
from fscil_bench.results.record import environment, hardware, now_iso
from fscil_bench.results.store import SCHEMA_VERSION, ResultsStore, RunKey
from fscil_bench.run.catalog import MethodCatalog
from fscil_bench.run.describe import Describer, weights_reference
from fscil_bench.run.methods import MethodRegistry
from fscil_bench.run.overrides import Override, ResolvedPreset
from fscil_bench.run.pools import shared_pool
from fscil_bench.run.runner import RunOptions, RunResult, run_method
from fscil_bench.schedules.draws import variant_record


@dataclass(frozen=True)
class RunOutcome:
    key: RunKey
    status: str  # "completed", "failed" or "skipped"
    summary: str


def build_record(key: RunKey, bench: Benchmark, method_cls: type, source: str, result: RunResult,
                 started: str, device: str, command: str | None, run_file: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record of one run. ``key.preset`` is the preset's id (``paper+<digest>`` with overrides;
    ``config`` holds the preset's name, the overrides and the resolved hyperparameters);
    ``run_file`` names the run file the command read (its path and sha256), if any."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": result.status,
        "benchmark": {"id": bench.id, "name": bench.name, "version": bench.version, "family": bench.family,
                      "num_classes": bench.schedule.num_classes, "class_groups": bench.schedule.class_groups()},
        "method": {
            "name": key.method,
            "source": source,
            "paper": getattr(method_cls, "paper", ""),
            "extra_data": getattr(method_cls, "extra_data", None),
            "oracle": bool(getattr(method_cls, "oracle", False)),
        },
        "preset": key.preset,
        "seed": key.seed,
        "split": key.split,
        "order": key.order,
        "track": key.track,
        # The schedule this run used: split, order, digest (and, for a variant, its class order and shots).
        "schedule": variant_record(bench.schedule, bench.variant),
        "config": result.config,
        "environment": environment(),
        "hardware": hardware(device),
        "command": command,
        "run_file": dict(run_file) if run_file else None,
        "started_at": started,
        "finished_at": now_iso(),
        "timing": result.timing,
        "memory": result.memory,
        "peak_memory": result.peak_memory,
        "extra": result.extra,
        "sessions_done": result.sessions_done,
        "metrics": result.metrics,
        # Neural-collapse diagnostics per session (None when the method has no embed).
        "diagnostics": result.diagnostics,
        "error": result.error,
        # How the method was kept apart from the runner, and how to replay its evaluation batches.
        "isolation": result.isolation,
        "evaluation_order": result.evaluation_order,
    }


def summary_line(key: RunKey, result: RunResult) -> str:
    head = f"{key.describe()}:"
    seconds = result.timing.get("total_seconds", 0.0)
    if result.status != "completed":
        err = result.error or {}
        return f"{head} FAILED in session {err.get('session')} ({err.get('type')}: {err.get('message')}) after {seconds:.1f}s"
    m = result.metrics or {}
    return (
        f"{head} base {100 * m['session_acc'][0]:.2f}%  last {100 * m['last']:.2f}%  "
        f"avg {100 * m['avg']:.2f}%  PD {100 * m['pd']:.2f}  ({seconds:.1f}s)"
    )


def check_weights(spec_family: str, resolved: Mapping[str, ResolvedPreset], preset: str, options: RunOptions) -> None:
    """Stop before anything trains when a run needs pretrained weights that are missing or wrong
    (:class:`fscil_bench.models.weights.WeightsError`, one line naming the file and its source).
    ``resolved`` maps each method to run to its resolved preset."""
    folder = options.weights_dir or options.cache_dir / "weights"
    for method, chosen in resolved.items():
        reference = weights_reference(chosen)
        if reference:
            try:
                resolve_weights(reference, folder)
            except WeightsError as exc:
                raise WeightsError(f"{method} [{preset}] on {spec_family} {exc}") from None


def run_grid(
    benchmarks: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    registry: MethodCatalog | MethodRegistry,
    store: ResultsStore,
    options: RunOptions,
    load_options: LoadOptions,
    force: bool = False,
    command: str | None = None,
    echo: Callable[[str], None] = print,
    overrides: Sequence[Override] = (),
    run_file: Mapping[str, Any] | None = None,
    splits: Sequence[int] = (0,),
    orders: Sequence[int] = (0,),
) -> list[RunOutcome]:
    """Run every (benchmark, method, seed, split, order); a completed record is skipped unless
    ``force``. Splits and orders are the few-shot draws and class orders of
    :mod:`fscil_bench.schedules.draws` (0: the standard ones).

    ``registry`` is a :class:`~fscil_bench.run.catalog.MethodCatalog` (or a
    :class:`~fscil_bench.run.methods.MethodRegistry`). The runs share one worker pool
    (``options.pool``, or one made here whose sandbox hides ``store``, the data root and the
    benchmarks' own data folders). ``overrides`` change the preset
    (:mod:`fscil_bench.run.overrides`; the methods' own code resolves them, in a worker of the
    pool, :mod:`fscil_bench.run.describe`); runs with overrides are keyed under the preset's id
    (``paper+<digest>``), apart from the preset's own runs."""
    with shared_pool(options, [get_benchmark(b) for b in benchmarks], registry, store, load_options) as options:
        limits = options.limits
        with Describer({m: registry.get(m) for m in methods}, options.pool, limits and limits.load_seconds,
                       limits and limits.memory_bytes) as describer:
            return _run_grid(benchmarks, methods, seeds, preset, registry, store, options, load_options, force, command,
                             echo, overrides, run_file, describer, splits, orders)


def _run_grid(benchmarks: Sequence[str], methods: Sequence[str], seeds: Sequence[int], preset: str, registry: Any,
              store: ResultsStore, options: RunOptions, load_options: LoadOptions, force: bool, command: str | None,
              echo: Callable[[str], None], overrides: Sequence[Override], run_file: Mapping[str, Any] | None,
              describer: Describer, splits: Sequence[int], orders: Sequence[int]) -> list[RunOutcome]:
    outcomes: list[RunOutcome] = []
    overrides = [o for o in overrides if o.method is None or o.method in methods]  # a job runs one of the methods
    for bench_name in benchmarks:
        spec = get_benchmark(bench_name)
        resolved = {m: r for (_, m, _), r in describer.resolve(methods, [preset], [spec.family], overrides).items()}
        keys = [RunKey(spec.id, m, resolved[m].id, s, split, order, track=resolved[m].track)
                for m in methods for s in seeds for split in splits for order in orders]
        # Under torchrun every rank runs the same keys (rank 0's view of the store) and only rank 0 writes.
        todo = distributed.broadcast_object([k for k in keys if force or not store.is_complete(k)])
        for k in keys:
            if k not in todo:
                outcomes.append(RunOutcome(k, "skipped", f"{k.describe()}: already complete, skipped"))
                echo(outcomes[-1].summary)
        if not todo:
            continue
        check_weights(spec.family, {m: resolved[m] for m in sorted({k.method for k in todo})}, preset, options)
        describer.close()  # the runs' workers take its place
        standard = spec.load(load_options)
        variants: dict[tuple[int, int], Benchmark] = {}
        for key in todo:
            method_cls = registry.get(key.method)
            if (key.split, key.order) not in variants:
                variants[key.split, key.order] = benchmark_variant(standard, key.split, key.order)
            bench = variants[key.split, key.order]
            started = now_iso()
            result = run_method(bench, method_cls, preset, key.seed, options, resolved[key.method].overrides)
            if distributed.is_main_process():
                store.write(
                    key,
                    build_record(key, bench, method_cls, registry.sources.get(key.method, ""), result, started,
                                 str(options.device), command, run_file),
                    result.predictions,
                    result.test_labels,
                )
            outcomes.append(RunOutcome(key, result.status, summary_line(key, result)))
            echo(outcomes[-1].summary)
    return outcomes
