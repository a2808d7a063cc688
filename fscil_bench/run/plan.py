"""The dry run: what a grid would do, worked out without training or writing anything.

For every (benchmark, method, preset, seed) of a grid, :func:`plan_grid` says whether the run is
complete (and would be skipped) or would run, with its resolved recipe, and which cached base
models it would ask for (a method's ``base_model_recipes``): trained, loaded from the cache, or
loaded after an earlier run of the same grid has trained it. A base model's cache key needs the
benchmark's schedule, so the benchmark is loaded (its data cache may be built) when some of its
runs would run; where it cannot be loaded the base models are left unknown, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fscil_bench.benchmarks.benchmark import Benchmark, BenchmarkError, LoadOptions
from fscil_bench.benchmarks.registry import get_benchmark
from fscil_bench.cache import verified
from fscil_bench.protocol import Context, hparams_to_dict
from fscil_bench.results.store import ResultsStore, RunKey
from fscil_bench.results.tracks import SCRATCH
from fscil_bench.run.overrides import ResolvedPreset
from fscil_bench.run.runner import make_session, method_views
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
        preset) its recipe, then one line per seed."""
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
              method_classes: Mapping[str, type], resolved: Mapping[tuple[str, str, str], ResolvedPreset],
              store: ResultsStore, load_options: LoadOptions, force: bool = False) -> Plan:
    """The :class:`Plan` of a grid whose presets ``resolved`` holds (see
    :func:`fscil_bench.run.overrides.resolve_grid`), against ``store`` and the base-model cache
    under ``load_options.cache_dir``."""
    plan = Plan()
    trained: set[str] = set()
    infos: dict[str, Benchmark | str] = {}  # benchmark name -> the loaded benchmark, or why it cannot be loaded
    for preset in presets:  # the order the command runs them in
        for name in benchmarks:
            spec = get_benchmark(name)
            for method in methods:
                chosen = resolved[(spec.family, method, preset)]
                for seed in seeds:
                    key = RunKey(spec.id, method, chosen.id, seed, track=chosen.track)
                    run = PlannedRun(key, ("rerun" if force else "skip") if store.is_complete(key) else "run", chosen)
                    plan.runs.append(run)
                    if run.action == "skip":
                        continue
                    if name not in infos:
                        try:
                            infos[name] = spec.load(load_options)
                        except BenchmarkError as exc:
                            infos[name] = f"base models unknown: the benchmark cannot be loaded ({exc})"
                    bench = infos[name]
                    if isinstance(bench, str):
                        run.note = bench
                    else:
                        _plan_base_models(run, method_classes[method], bench, load_options.cache_dir, trained)
    return plan


def _plan_base_models(run: PlannedRun, method_cls: type, bench: Benchmark, cache_dir: Path, trained: set[str]) -> None:
    info = bench.info()
    views = method_views(method_cls, run.preset.hparams, bench).identity
    ctx = Context.create(info, run.preset.hparams, run.key.seed, cache_dir=cache_dir, log=lambda msg: None,
                         views=views)
    try:
        declare = getattr(method_cls(), "base_model_recipes", None)
        recipes = declare(ctx) if declare is not None else None
    except Exception as exc:  # the run itself would fail the same way in its base session
        run.note = f"base models unknown: {type(exc).__name__}: {exc}"
        return
    if recipes is None:
        run.note = "base models not declared by the method"
        return
    run.base_models = []
    data_sha256 = make_session(bench, 0).train.digest()  # what the base models are trained on
    for recipe in recipes:
        key = base_model_key(base_model_recipe_key(info.id, run.key.seed, recipe, views), data_sha256)
        path = base_model_path(cache_dir, key)
        action = LOAD_AFTER if key in trained else LOAD if verified(path) else TRAIN
        if action == TRAIN:
            trained.add(key)
        run.base_models.append(PlannedBaseModel(key, str(recipe.get("kind", "?")), action, path))


def _run_line(run: PlannedRun) -> str:
    seed = f"seed {run.key.seed}"
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
