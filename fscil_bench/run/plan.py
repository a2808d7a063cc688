"""The dry run: what a grid would do, worked out without training or writing anything.

For every (benchmark, method, preset, seed, split, order) of a grid, :func:`plan_grid` says whether the run is
complete (and would be skipped) or would run, with its resolved recipe, and which cached base
models it would ask for (a method's ``base_model_recipes``): trained, loaded from the cache, or
loaded after an earlier run of the same grid has trained it. The recipes and the method's views
come from the method's own code, asked through a :class:`~fscil_bench.run.describe.Describer`
(in a worker under isolation). A base model's cache key needs the benchmark's schedule, so the benchmark is loaded (its data cache may be built) when some of its
runs would run; where it cannot be loaded the base models are left unknown, with the reason.
Other few-shot draws and class orders keep the base session, so their base models are those of
the standard split and order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fscil_bench.benchmarks.benchmark import Benchmark, BenchmarkError, LoadOptions
from fscil_bench.benchmarks.registry import get_benchmark
from fscil_bench.benchmarks.variants import benchmark_variant
from fscil_bench.cache import verified
from fscil_bench.protocol import hparams_to_dict
from fscil_bench.results.store import ResultsStore, RunKey
from fscil_bench.results.tracks import SCRATCH
from fscil_bench.run.describe import Describer
from fscil_bench.run.overrides import ResolvedPreset
from fscil_bench.run.runner import make_session
from fscil_bench.toolkit.base_models import base_model_key, base_model_path, base_model_recipe_key

TRAIN, LOAD, LOAD_AFTER = "train", "load from the cache", "load (trained by an earlier run of this grid)"


@dataclass(frozen=True)
class PlannedBaseModel:
    key: str
    kind: str
    action: str  # TRAIN, LOAD or LOAD_AFTER
    path: Path


@dataclass
class PlannedRun:
    """One run of the grid. ``base_models`` is None when unknown (``note`` says why)."""

    key: RunKey
    action: str  # "skip" (complete), "run", or "rerun" (complete, but forced)
    preset: ResolvedPreset
    base_models: list[PlannedBaseModel] | None = None
    note: str = ""


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan as printed, in the order the command would run it: per benchmark, per (method,
        preset) its recipe, then one line per seed, split and order."""
        out = ["dry run: nothing is trained or written"]
        bench = group = None
        for run in self.runs:
            if run.key.benchmark != bench:
                bench, group = run.key.benchmark, None
                out.append(bench)
            if (run.key.method, run.key.preset) != group:
                group = (run.key.method, run.key.preset)
                changed = ", ".join(f"{k}={_flow(v)}" for k, v in run.preset.overrides.items())
                track = "" if run.key.track == SCRATCH else f" [{run.key.track}]"
                out.append(f"  {run.key.method} [{run.key.preset}]{track}" + (f"  overrides: {changed}" if changed else ""))
                out.append(f"    recipe: {_flow(hparams_to_dict(run.preset.hparams)) if run.preset.hparams is not None else '-'}")
            out.append(f"    {_run_line(run)}")
        todo = [r for r in self.runs if r.action != "skip"]
        models = [m for r in todo for m in r.base_models or []]
        trained = len({m.key for m in models if m.action == TRAIN})
        loaded = len({m.key for m in models if m.action == LOAD})
        out.append(f"{len(self.runs)} runs: {len(todo)} would run, {len(self.runs) - len(todo)} complete (skipped); "
                   f"base models: {trained} to train, {loaded} to load from the cache")
        return out


def plan_grid(benchmarks: Sequence[str], methods: Sequence[str], presets: Sequence[str], seeds: Sequence[int],
              describer: Describer, resolved: Mapping[tuple[str, str, str], ResolvedPreset],
              store: ResultsStore, load_options: LoadOptions, force: bool = False,
              splits: Sequence[int] = (0,), orders: Sequence[int] = (0,)) -> Plan:
    """The :class:`Plan` of a grid whose presets ``resolved`` holds (see
    :meth:`fscil_bench.run.describe.Describer.resolve`), against ``store`` and the base-model
    cache under ``load_options.cache_dir``; ``describer`` answers each run's base-model recipes.
    Every seed runs on every few-shot draw in ``splits`` and class order in ``orders``
    (:mod:`fscil_bench.schedules.draws`)."""
    plan = Plan()
    trained: set[str] = set()
    infos: dict[tuple[str, int, int], Benchmark | str] = {}  # (name, split, order) -> the benchmark, or why not
    for preset in presets:  # the order the command runs them in
        for name in benchmarks:
            spec = get_benchmark(name)
            for method in methods:
                chosen = resolved[(spec.family, method, preset)]
                for seed, split, order in itertools.product(seeds, splits, orders):
                    key = RunKey(spec.id, method, chosen.id, seed, split, order, track=chosen.track)
                    run = PlannedRun(key, ("rerun" if force else "skip") if store.is_complete(key) else "run", chosen)
                    plan.runs.append(run)
                    if run.action == "skip":
                        continue
                    bench = _load(infos, spec, split, order, load_options)
                    if isinstance(bench, str):
                        run.note = bench
                    else:
                        _plan_base_models(run, describer, bench, load_options.cache_dir, trained)
    return plan


def _load(infos: dict[tuple[str, int, int], Benchmark | str], spec, split: int, order: int,
          load_options: LoadOptions) -> Benchmark | str:
    """The benchmark of ``spec`` under ``split`` and ``order`` (loaded once), or why it cannot be loaded."""
    if (spec.name, 0, 0) not in infos:
        try:
            infos[spec.name, 0, 0] = spec.load(load_options)
        except BenchmarkError as exc:
            infos[spec.name, 0, 0] = f"base models unknown: the benchmark cannot be loaded ({exc})"
    if (spec.name, split, order) not in infos:
        standard = infos[spec.name, 0, 0]
        try:
            infos[spec.name, split, order] = standard if isinstance(standard, str) else benchmark_variant(standard, split, order)
        except BenchmarkError as exc:
            infos[spec.name, split, order] = f"base models unknown: {exc}"
    return infos[spec.name, split, order]


def _plan_base_models(run: PlannedRun, describer: Describer, bench: Benchmark, cache_dir: Path, trained: set[str]) -> None:
    answer = describer.base_models(run.key.method, run.preset, bench, run.key.seed, cache_dir)
    views, recipes = answer.views, answer.recipes
    if recipes is None:
        run.note = answer.note
        return
    run.base_models = []
    data_sha256 = make_session(bench, 0).train.digest()  # what the base models are trained on
    for recipe in recipes:
        key = base_model_key(base_model_recipe_key(bench.id, run.key.seed, recipe, views), data_sha256)
        path = base_model_path(cache_dir, key)
        action = LOAD_AFTER if key in trained else LOAD if verified(path) else TRAIN
        if action == TRAIN:
            trained.add(key)
        run.base_models.append(PlannedBaseModel(key, str(recipe.get("kind", "?")), action, path))


def _run_line(run: PlannedRun) -> str:
    seed = f"seed {run.key.seed}" + "".join(f" {k} {v}" for k, v in (("split", run.key.split), ("order", run.key.order)) if v)
    if run.action == "skip":
        return f"{seed}: complete, would be skipped"
    head = f"{seed}: would {'run again (--force)' if run.action == 'rerun' else 'run'}"
    if run.base_models is None:
        return f"{head}; {run.note}"
    if not run.base_models:
        return f"{head}; no cached base model"
    return f"{head}; " + "; ".join(f"base model {m.key} ({m.kind}): {m.action}" for m in run.base_models)


def _flow(value: Any) -> str:
    """A value as one line of YAML flow style (``{lr: 0.05, milestones: [12, 16]}``)."""
    text = yaml.safe_dump(_jsonable(value), default_flow_style=True, sort_keys=False, width=10**9)
    return text.strip().removesuffix("...").strip()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
