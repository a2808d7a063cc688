"""Run a grid of (benchmark, method, seed) runs into a results store, skipping finished ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fscil_bench import distributed
from fscil_bench.benchmarks.benchmark import Benchmark, LoadOptions
from fscil_bench.benchmarks.registry import get_benchmark
from fscil_bench.models.weights import WeightsError, resolve_weights
from fscil_bench.results.record import environment, hardware, now_iso
from fscil_bench.results.store import SCHEMA_VERSION, ResultsStore, RunKey
from fscil_bench.run.methods import MethodRegistry
from fscil_bench.run.overrides import Override, resolve
from fscil_bench.run.runner import RunOptions, RunResult, run_method


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
        "config": result.config,
        "environment": environment(),
        "hardware": hardware(device),
        "command": command,
        "run_file": dict(run_file) if run_file else None,
        "started_at": started,
        "finished_at": now_iso(),
        "timing": result.timing,
        "memory": result.memory,
        "extra": result.extra,
        "sessions_done": result.sessions_done,
        "metrics": result.metrics,
        # Neural-collapse diagnostics per session (None when the method has no embed).
        "diagnostics": result.diagnostics,
        "error": result.error,
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


def check_weights(spec_family: str, hparams_by_method: Mapping[str, Any], preset: str, options: RunOptions) -> None:
    """Stop before anything trains when a run needs pretrained weights that are missing or wrong
    (:class:`fscil_bench.models.weights.WeightsError`, one line naming the file and its source).
    ``hparams_by_method``: each method's hyperparameters as resolved (with the overrides)."""
    folder = options.weights_dir or options.cache_dir / "weights"
    for method, hparams in hparams_by_method.items():
        reference = getattr(hparams, "pretrained", None)
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
    registry: MethodRegistry,
    store: ResultsStore,
    options: RunOptions,
    load_options: LoadOptions,
    force: bool = False,
    command: str | None = None,
    echo: Callable[[str], None] = print,
    overrides: Sequence[Override] = (),
    run_file: Mapping[str, Any] | None = None,
) -> list[RunOutcome]:
    """Run every (benchmark, method, seed); a completed record is skipped unless ``force``.

    ``overrides`` change the preset (:mod:`fscil_bench.run.overrides`); runs with overrides are
    keyed under the preset's id (``paper+<digest>``), apart from the preset's own runs."""
    outcomes: list[RunOutcome] = []
    for bench_name in benchmarks:
        spec = get_benchmark(bench_name)
        resolved = {m: resolve(registry.get(m), preset, spec.family, overrides) for m in methods}
        keys = [RunKey(spec.id, m, resolved[m].id, s, track=resolved[m].track) for m in methods for s in seeds]
        # Under torchrun every rank runs the same keys (rank 0's view of the store) and only rank 0 writes.
        todo = distributed.broadcast_object([k for k in keys if force or not store.is_complete(k)])
        for k in keys:
            if k not in todo:
                outcomes.append(RunOutcome(k, "skipped", f"{k.describe()}: already complete, skipped"))
                echo(outcomes[-1].summary)
        if not todo:
            continue
        check_weights(spec.family, {m: resolved[m].hparams for m in sorted({k.method for k in todo})}, preset, options)
        bench = spec.load(load_options)
        for key in todo:
            method_cls = registry.get(key.method)
            started = now_iso()
            result = run_method(bench, method_cls, preset, key.seed, options, resolved[key.method].overrides)
            if distributed.is_main_process():
                store.write(
                    key,
                    build_record(key, bench, method_cls, registry.sources.get(key.method, ""), result, started, str(options.device), command,
                                 run_file),
                    result.predictions,
                    result.test_labels,
                )
            outcomes.append(RunOutcome(key, result.status, summary_line(key, result)))
            echo(outcomes[-1].summary)
    return outcomes
