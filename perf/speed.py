#!/usr/bin/env python
"""Speed of fscil-bench's own code paths, each measured side by side with a reference in one run.

    python perf/speed.py            # full mode: glyphs100, the default benchmark (about 12 minutes on 2 cores)
    python perf/speed.py --short    # CI mode: glyphs100-tiny, few steps (about 1 minute on 2 cores)
    python perf/speed.py --sections prototype --models-dir ~/.cache/fscil-bench
                                          # prototype only, base model from the cache of 'fscil-bench run'

Five figures, each a ratio of two measurements taken in the same process:

1. ``train step``: images/s of ``fscil_bench.training.train_supervised`` (the loop every method
   trains with) against a bare PyTorch loop (randperm, index, augment, forward, backward, step)
   on the same model, data, batch size and augmentation. Target: ratio >= 0.9.
2. ``data path``: images/s of ``LabelledImages.batches`` (cached uint8 arrays, batched
   augmentation) against torchvision's per-sample pipeline (a PIL image per sample,
   ``RandomCrop`` / ``RandomHorizontalFlip`` / ``ToTensor`` / ``Normalize``, batched by a
   ``DataLoader``) on the same images. Target: ratio >= 3.
3. ``session cost``: wall time per incremental session (train + evaluate) of our ``finetune``
   (through ``fscil_bench.runner.run_method``) against Avalanche's ``Naive`` strategy on the same
   sessions (our schedule exported by ``to_avalanche_benchmark``), from the same cached base model,
   with the same SGD settings, epochs and batch size. Target: ratio <= 0.5, accuracy equal within noise.
4. ``prototype sessions``: the 8 incremental sessions of the ``prototype`` method (fit + evaluate,
   from the run's ``fit_seconds`` / ``eval_seconds``) against its base session, with the shared
   base model trained in the run (cache miss) and loaded from the cache (cache hit). Target: < 10%.
5. ``isolation overhead``: wall time of the README's first command's methods (finetune,
   prototype, etf; ``quick``, base model cached) through the grid with each method in its own
   sandboxed worker (isolation ``auto``), against the same grid in the runner's process
   (``none``): worker pool start, method discovery, runs and records. Target: ratio <= 1.05.

For figures 1-3 and 5, ours and the reference run alternately (the order swapped every round)
after one untimed warm-up each, and each figure is the median over rounds; figure 4 splits single
runs. Figures 1-4 run their methods in this process (isolation ``none``): they measure the
methods' own paths.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fscil_bench.benchmarks import Benchmark, BenchmarkError, LoadOptions, get_benchmark
from fscil_bench.data.arrays import ImageArray, LabelledImages
from fscil_bench.data.transforms import CropFlip, ResizedCropFlip
from fscil_bench.defaults import EVAL_BATCH_SIZE
from fscil_bench.models import build_backbone
from fscil_bench.protocol import Context
from fscil_bench.run.runner import RunOptions, make_session, run_method
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    BackboneWithHead,
    cross_entropy_base_model,
)
from fscil_bench.toolkit.training import SGDRecipe, train_supervised


@dataclass
class Figure:
    """One measured comparison: ``ratio = ours / reference`` of ``unit``."""

    name: str
    unit: str
    ours: float
    reference: float
    reference_name: str
    target: str
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")

    def line(self) -> str:
        extra = "".join(f", {k} {v}" for k, v in self.notes.items())
        return (f"{self.name}: ours {_number(self.ours)} {self.unit}, {self.reference_name} {_number(self.reference)} "
                f"{self.unit}, ratio {self.ratio:.3f} (target {self.target}){extra}")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _quiet(message: str) -> None:
    pass


def alternate(runs: dict[str, Callable[[], tuple[int, float]]], rounds: int) -> dict[str, float]:
    """Median rate (items per second) of each of ``runs`` (each returns ``(items, seconds)``), run
    one after the other after an untimed warm-up of each; the order is reversed every round."""
    names = list(runs)
    for name in names:
        runs[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            images, seconds = runs[name]()
            rates[name].append(images / seconds)
    return {name: statistics.median(values) for name, values in rates.items()}


def make_context(bench: Benchmark, cache_dir: Path, seed: int = 0, hparams: Any = None) -> Context:
    """A context as ``run_method`` builds it (CPU, no progress bars, quiet)."""
    return Context.create(bench.info(), hparams, seed, cache_dir=cache_dir, log=_quiet)


def base_subset(bench: Benchmark, images: int, seed: int = 0) -> LabelledImages:
    """A seeded sample of ``images`` base-session training images, as a method receives them."""
    base = make_session(bench, 0).train
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(base), size=min(images, len(base)), replace=False))
    return LabelledImages(_array(base, pick), base.train_transform, base.eval_transform)


def _array(data: LabelledImages, pick: np.ndarray) -> ImageArray:
    return ImageArray(data.raw_images.numpy()[pick].copy(), data.labels.numpy()[pick].copy())


# --- 1. training step ---------------------------------------------------------------------------


def bare_training_loop(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, transform, recipe: SGDRecipe,
                       generator: torch.Generator) -> int:
    """The reference: the plainest PyTorch loop with the same model, batches and augmentation
    (constant learning rate, no bookkeeping). Returns the number of images trained on."""
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    model.train()
    n, bs, seen = len(labels), recipe.batch_size, 0
    stop = n - n % bs if n > bs else n  # drop the last, smaller batch, as train_supervised does
    for _ in range(recipe.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, stop, bs):
            idx = order[start : start + bs]
            loss = F.cross_entropy(model(transform(images[idx], generator)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    return seen


def measure_train_step(bench: Benchmark, cache_dir: Path, images: int, epochs: int, rounds: int,
                       backbone: str = QUICK_BACKBONE, batch_size: int = QUICK_BASE_SGD.batch_size) -> Figure:
    data = base_subset(bench, images)
    recipe = SGDRecipe(epochs=epochs, lr=QUICK_BASE_SGD.lr, batch_size=batch_size, warmup_epochs=QUICK_BASE_SGD.warmup_epochs)
    ctx = make_context(bench, cache_dir)
    torch.manual_seed(0)
    initial = BackboneWithHead(build_backbone(backbone), bench.schedule.num_base_classes)
    trained = len(data) - len(data) % batch_size if len(data) > batch_size else len(data)

    def ours() -> tuple[int, float]:
        model, generator = copy.deepcopy(initial), torch.Generator().manual_seed(1)
        tic = time.perf_counter()
        train_supervised(model, data, F.cross_entropy, recipe, ctx, desc="", generator=generator)
        return trained * epochs, time.perf_counter() - tic

    def bare() -> tuple[int, float]:
        model, generator = copy.deepcopy(initial), torch.Generator().manual_seed(1)
        tic = time.perf_counter()
        seen = bare_training_loop(model, data.raw_images, data.labels, data.train_transform, recipe, generator)
        return seen, time.perf_counter() - tic

    rates = alternate({"ours": ours, "bare": bare}, rounds)
    return Figure("train step", "img/s", rates["ours"], rates["bare"], "bare PyTorch loop", ">= 0.9",
                  {"model": backbone, "batch": batch_size, "images": f"{trained}x{epochs} epochs", "rounds": rounds})


# --- 2. data path -------------------------------------------------------------------------------


def torchvision_pipeline(transform):
    """torchvision's per-sample equivalent of one of our batched training transforms."""
    from torchvision import transforms as T

    if isinstance(transform, CropFlip):
        ops = [T.RandomCrop(transform.size, padding=transform.padding)] + ([T.RandomHorizontalFlip()] if transform.flip else [])
    elif isinstance(transform, ResizedCropFlip):
        ops = [T.RandomResizedCrop(transform.size), T.RandomHorizontalFlip()]
    else:
        raise ValueError(f"no torchvision equivalent of {type(transform).__name__}")
    return T.Compose([*ops, T.ToTensor(), T.Normalize(transform.norm.mean, transform.norm.std)])


class PILImages(torch.utils.data.Dataset):
    """uint8 ``(N, H, W, 3)`` images served one PIL image at a time, as torchvision's CIFAR
    datasets serve them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def measure_data_path(bench: Benchmark, images: int, rounds: int, batch_size: int = 128) -> Figure:
    data = base_subset(bench, images)
    reference = torch.utils.data.DataLoader(
        PILImages(data.raw_images.numpy(), data.labels.numpy(), torchvision_pipeline(data.train_transform)),
        batch_size=batch_size, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0))

    def ours() -> tuple[int, float]:
        tic, seen = time.perf_counter(), 0
        for x, _ in data.batches(batch_size, augment=True, shuffle=True, generator=torch.Generator().manual_seed(0)):
            seen += len(x)
        return seen, time.perf_counter() - tic

    def pil() -> tuple[int, float]:
        tic, seen = time.perf_counter(), 0
        for x, _ in reference:
            seen += len(x)
        return seen, time.perf_counter() - tic

    rates = alternate({"ours": ours, "pil": pil}, rounds)
    return Figure("data path", "img/s", rates["ours"], rates["pil"], "torchvision per-sample PIL", ">= 3",
                  {"images": len(data), "batch": batch_size, "workers": 0, "rounds": rounds})


# --- 3. session cost against Avalanche ----------------------------------------------------------


def run_avalanche_naive(bench: Benchmark, cache_dir: Path, hp, seed: int = 0) -> tuple[list[float], list[float]]:
    """Avalanche's ``Naive`` on our sessions (``to_avalanche_benchmark``), started from the
    cached base model ``finetune`` starts from, trained with ``finetune``'s session recipe.
    Returns seconds (train + eval) and Avalanche's stream accuracy, per incremental session."""
    from fscil_bench.integrations.avalanche_adapter import (
        AvalancheNet,
        quiet,
        to_avalanche_benchmark,
    )

    with quiet():  # Avalanche's import-time warnings
        from avalanche.evaluation.metrics import accuracy_metrics
        from avalanche.models import IncrementalClassifier
        from avalanche.training.plugins import EvaluationPlugin
        from avalanche.training.supervised import Naive

    ctx = make_context(bench, cache_dir, seed, hp)
    base = cross_entropy_base_model(make_session(bench, 0), ctx, hp.backbone, hp.base)
    if not ctx.extra["base_model"]["cache_hit"]:
        raise RuntimeError("run finetune first: both sides must start from the same cached base model")
    num_base = bench.schedule.num_base_classes
    with quiet():
        scenario = to_avalanche_benchmark(bench)
        classifier = IncrementalClassifier(base.backbone.out_dim, initial_out_features=num_base)
        with torch.no_grad():
            classifier.classifier.weight.copy_(base.head.weight)
            classifier.classifier.bias.copy_(base.head.bias)
        model = AvalancheNet(copy.deepcopy(base.backbone), classifier)
        recipe: SGDRecipe = hp.session
        strategy = Naive(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay),
            criterion=torch.nn.CrossEntropyLoss(), train_mb_size=recipe.batch_size, train_epochs=0, eval_mb_size=EVAL_BATCH_SIZE,
            device=torch.device("cpu"), evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        )
        torch.manual_seed(seed)
        strategy.train(scenario.train_stream[0])  # 0 epochs: registers the base classes with the classifier
        strategy.train_epochs = recipe.epochs
    seconds, accuracy = [], []
    for t in range(1, len(bench.schedule)):
        with quiet():
            tic = time.perf_counter()
            strategy.train(scenario.train_stream[t])
            metrics = strategy.eval(scenario.test_stream[: t + 1])
            seconds.append(time.perf_counter() - tic)
        accuracy.append(next(v for k, v in metrics.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream")))
    return seconds, accuracy


def finetune_with_session_epochs(epochs: int | None) -> type:
    """``finetune`` itself, or (for short runs) a copy whose ``quick`` preset trains each session
    for ``epochs`` epochs; every other setting is the preset's."""
    from fscil_bench.baselines.finetune import FineTune

    if epochs is None:
        return FineTune
    quick = FineTune.resolve_preset("quick", "default")
    preset = dataclasses.replace(quick, session=dataclasses.replace(quick.session, epochs=epochs))
    return type("FineTuneShort", (FineTune,), {"presets": {"quick": preset}})


def measure_session_cost(bench: Benchmark, cache_dir: Path, rounds: int, seed: int = 0, epochs: int | None = None) -> Figure:
    """Seconds per incremental session (train + evaluate) of ``finetune`` and of Avalanche's
    ``Naive``, each run over all sessions ``rounds`` times, alternately, after an untimed
    warm-up run of each (which also trains the shared base model when it is not cached)."""
    method = finetune_with_session_epochs(epochs)
    hp = method.resolve_preset("quick", bench.family)
    accuracy: dict[str, list[float]] = {}

    def ours() -> tuple[int, float]:
        result = run_method(bench, method, "quick", seed, RunOptions(cache_dir=cache_dir, log=_quiet, isolation="none"))
        if result.status != "completed":
            raise RuntimeError(f"finetune failed: {result.error}")
        seconds = [f + e for f, e in zip(result.timing["fit_seconds"][1:], result.timing["eval_seconds"][1:])]
        accuracy["ours"] = result.metrics["session_acc"][1:]
        return len(seconds), sum(seconds)

    def avalanche() -> tuple[int, float]:
        seconds, accuracy["Avalanche"] = run_avalanche_naive(bench, cache_dir, hp, seed)
        return len(seconds), sum(seconds)

    sessions_per_second = alternate({"ours": ours, "Avalanche": avalanche}, rounds)
    return Figure("session cost", "s/session", 1 / sessions_per_second["ours"], 1 / sessions_per_second["Avalanche"],
                  "Avalanche Naive", "<= 0.5",
                  {"sessions": len(accuracy["ours"]), "epochs": hp.session.epochs, "batch": hp.session.batch_size,
                   "rounds": rounds, **{f"mean acc {name}": f"{100 * statistics.mean(acc):.2f}%" for name, acc in accuracy.items()}})


# --- 4. frozen-backbone sessions ----------------------------------------------------------------


def prototype_session_split(bench: Benchmark, cache_dir: Path, seed: int = 0) -> dict[str, float]:
    """Seconds of the base session and of all incremental sessions (fit + evaluate) of one
    ``prototype`` run, and whether its base model came from the cache."""
    from fscil_bench.baselines.prototype import Prototype

    result = run_method(bench, Prototype, "quick", seed, RunOptions(cache_dir=cache_dir, log=_quiet, isolation="none"))
    if result.status != "completed":
        raise RuntimeError(f"prototype failed: {result.error}")
    per_session = [f + e for f, e in zip(result.timing["fit_seconds"], result.timing["eval_seconds"])]
    return {"base": per_session[0], "incremental": sum(per_session[1:]), "sessions": len(per_session) - 1,
            "cache_hit": bool(result.extra["base_model"]["cache_hit"])}


def measure_prototype(bench: Benchmark, cache_dir: Path, seed: int = 0) -> list[Figure]:
    """Prototype's incremental sessions against its base session: first with an empty base-model
    cache (the base session trains the base model), then again with the model cached."""
    figures = []
    for _ in range(2):
        split = prototype_session_split(bench, cache_dir, seed)
        what = "base model loaded from cache" if split["cache_hit"] else "base session includes base-model training"
        figures.append(Figure(f"prototype sessions ({'cache hit' if split['cache_hit'] else 'cache miss'})", "s",
                              split["incremental"], split["base"], "base session", "< 0.10",
                              {"incremental sessions": split["sessions"], "note": what}))
    return figures


# --- 5. isolation overhead ---------------------------------------------------------------------


def grid_seconds(bench_name: str, methods: list[str], models: Path, cache_dir: Path, isolation: str,
                 preset: str = "quick", seed: int = 0) -> float:
    """Wall seconds of what ``fscil-bench run --methods ... --force`` does after parsing its
    arguments: start the worker pool (none in-process), discover the methods, run each through
    every session into a fresh results folder and write its record."""
    from fscil_bench.results.store import ResultsStore
    from fscil_bench.run.discovery import discover_methods
    from fscil_bench.run.grid import run_grid
    from fscil_bench.run.limits import default_limits
    from fscil_bench.run.pools import make_pool

    limits = default_limits(preset)
    with tempfile.TemporaryDirectory(prefix="fscil-speed-runs-") as runs:
        tic = time.perf_counter()
        pool = make_pool(isolation, models, [Path(runs), cache_dir / "datasets"], [])
        try:
            catalog = discover_methods([], pool, limits.load_seconds, limits.memory_bytes)
            options = RunOptions(cache_dir=models, log=_quiet, isolation=isolation, pool=pool)
            outcomes = run_grid([bench_name], methods, [seed], preset, catalog, ResultsStore(runs), options,
                                LoadOptions(cache_dir=cache_dir, log=_quiet), force=True, echo=_quiet)
        finally:
            if pool is not None:
                pool.close()
        seconds = time.perf_counter() - tic
    failed = [o.summary for o in outcomes if o.status != "completed"]
    if failed:
        raise RuntimeError(f"runs failed: {failed}")
    return seconds


def measure_isolation(bench: Benchmark, models: Path, cache_dir: Path, rounds: int,
                      methods: tuple[str, ...] = ("finetune", "prototype", "etf")) -> Figure:
    """The README's first command's methods isolated (``auto``: a sandboxed worker where the
    machine allows one) against in the runner's process, alternately, after an untimed warm-up of
    each (which also trains the shared base model)."""
    from fscil_bench.run.workers import resolve_isolation

    level, _ = resolve_isolation("auto")
    seconds = {level: [], "none": []}
    for r in range(rounds + 1):
        for side in (level, "none") if r % 2 == 0 else ("none", level):
            elapsed = grid_seconds(bench.name, list(methods), models, cache_dir, side)
            if r:  # round 0 is the warm-up
                seconds[side].append(elapsed)
    return Figure("isolation overhead", "s", statistics.median(seconds[level]), statistics.median(seconds["none"]),
                  "in-process (isolation none)", "<= 1.05",
                  {"isolation": level, "methods": "+".join(methods), "rounds": rounds,
                   "runs": f"{len(methods)} quick runs, base model cached"})


# --- the harness --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each figure measures.

    Attributes:
        benchmark: the images of the train-step and data-path figures.
        run_benchmark: the benchmark whose sessions the prototype and session-cost figures run.
        train_images, train_epochs, train_rounds: the train-step figure's work per round, and rounds.
        data_images, data_rounds: the data-path figure's images per round, and rounds.
        session_epochs: epochs per few-shot session of finetune and Naive (None: the preset's).
        session_rounds: timed runs over all sessions of each side of the session-cost figure.
        isolation_rounds: timed grids of each side of the isolation figure.
    """

    benchmark: str
    run_benchmark: str
    train_images: int
    train_epochs: int
    train_rounds: int
    data_images: int
    data_rounds: int
    session_epochs: int | None = None
    session_rounds: int = 3
    isolation_rounds: int = 3


SHORT = Sizes("glyphs100-tiny", "glyphs100-tiny", train_images=512, train_epochs=1, train_rounds=2,
              data_images=1024, data_rounds=2, session_epochs=5, session_rounds=1, isolation_rounds=1)
FULL = Sizes("glyphs100", "glyphs100", train_images=1280, train_epochs=1, train_rounds=5,
             data_images=5120, data_rounds=5)


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, load average {load}")


def run_all(sizes: Sizes, cache_dir: Path, sections: list[str], echo: Callable[[str], None] = print,
            models_dir: Path | None = None) -> list[Figure]:
    """Load the benchmarks and measure each of ``sections`` (train, data, prototype, session).
    Base models are trained into a fresh temporary folder, or reused from ``models_dir``."""
    def load(name: str) -> Benchmark:
        return get_benchmark(name).load(LoadOptions(cache_dir=cache_dir, log=_quiet))

    bench = load(sizes.benchmark)
    needs_runs = {"prototype", "session", "isolation"} & set(sections)
    runs = load(sizes.run_benchmark) if needs_runs and sizes.run_benchmark != sizes.benchmark else bench
    if models_dir is not None:
        return measure(bench, runs, sizes, models_dir, sections, echo, cache_dir)
    # A fresh folder for base models and features, so the first prototype run is a cache miss.
    with tempfile.TemporaryDirectory(prefix="fscil-speed-") as models:
        return measure(bench, runs, sizes, Path(models), sections, echo, cache_dir)


def measure(bench: Benchmark, runs: Benchmark, sizes: Sizes, models: Path, sections: list[str],
            echo: Callable[[str], None] = print, cache_dir: Path | None = None) -> list[Figure]:
    """Measure each of ``sections``: train and data on ``bench``'s images, prototype and session
    on ``runs``' sessions; base models are cached under ``models``."""
    figures: list[Figure] = []

    def add(new: Figure | list[Figure]) -> None:
        for figure in new if isinstance(new, list) else [new]:
            figures.append(figure)
            echo(figure.line())

    echo(f"images of {bench.id}, sessions of {runs.id}; {machine()}")
    if "train" in sections:
        add(measure_train_step(bench, models, sizes.train_images, sizes.train_epochs, sizes.train_rounds))
    if "data" in sections:
        add(measure_data_path(bench, sizes.data_images, sizes.data_rounds))
    if "prototype" in sections:
        add(measure_prototype(runs, models))
    if "session" in sections:
        add(measure_session_cost(runs, models, sizes.session_rounds, epochs=sizes.session_epochs))
    if "isolation" in sections:
        add(measure_isolation(runs, models, cache_dir or models, sizes.isolation_rounds))
    return figures


SECTIONS = ["train", "data", "prototype", "session", "isolation"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="CI mode: glyphs100-tiny and few steps")
    parser.add_argument("--benchmark", help="measure everything on this built-in benchmark (default: glyphs100; "
                        "glyphs100-tiny with --short)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--cache-dir", help="dataset cache (default: $FSCIL_BENCH_CACHE or ~/.cache/fscil-bench)")
    parser.add_argument("--models-dir", help="reuse the base models cached in this folder (e.g. the cache of "
                        "'fscil-bench run') instead of training them in a fresh temporary folder")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print("error: --threads must be at least 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    from fscil_bench.defaults import default_cache_dir

    sizes = SHORT if args.short else FULL
    if args.benchmark:
        try:
            get_benchmark(args.benchmark)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        sizes = dataclasses.replace(sizes, benchmark=args.benchmark, run_benchmark=args.benchmark)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    tic = time.perf_counter()
    try:
        figures = run_all(sizes, cache_dir, sections, models_dir=Path(args.models_dir) if args.models_dir else None)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - tic:.0f} s ({'short' if args.short else 'full'} mode)")
    if args.json:
        Path(args.json).write_text(json.dumps([{**asdict(f), "ratio": f.ratio} for f in figures], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
