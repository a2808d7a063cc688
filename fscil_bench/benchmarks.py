"""Benchmarks: a schedule plus its train and test images and transforms, under a versioned name.

A benchmark id is ``name@version`` (``glyphs100@1``). Anything that changes what a method is
trained or tested on - the schedule, a transform, the generated data - bumps the version;
records name the version they ran and reports never mix versions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.arrays import BatchTransform, ImageArray
from .data.glyphs import GLYPHS_VERSION
from .data.transforms import CropFlip, Evaluate, Normalization
from .protocol import BenchmarkInfo
from .schedule import Schedule


class BenchmarkError(RuntimeError):
    """A benchmark that cannot be loaded (unknown name, missing or malformed data)."""


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark: the schedule, the full train pool, the full test set, transforms."""

    name: str
    version: int
    family: str
    schedule: Schedule
    train: ImageArray
    test: ImageArray
    train_transform: BatchTransform
    eval_transform: BatchTransform
    manifest: dict

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def info(self) -> BenchmarkInfo:
        return BenchmarkInfo(
            name=self.name,
            version=self.version,
            family=self.family,
            num_classes=self.schedule.num_classes,
            num_sessions=len(self.schedule),
            num_base_classes=self.schedule.num_base_classes,
            image_size=int(self.train.images.shape[1]),
        )


@dataclass(frozen=True)
class LoadOptions:
    """Where a benchmark's data and caches live."""

    cache_dir: Path
    data_root: Path | None = None
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: its name, version, description and loader."""

    name: str
    version: int
    family: str
    description: str
    loader: Callable[[LoadOptions], Benchmark]

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def load(self, options: LoadOptions) -> Benchmark:
        return self.loader(options)


_REGISTRY: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    _REGISTRY[spec.name] = spec
    return spec


def benchmark_names() -> list[str]:
    return list(_REGISTRY)


def get_benchmark(name: str) -> BenchmarkSpec:
    """Look up a benchmark by ``name`` or ``name@version``."""
    if name.lower().endswith((".yaml", ".yml")):  # a custom benchmark described by a YAML file
        from .custom_benchmarks import custom_benchmark_spec

        return custom_benchmark_spec(Path(name))
    base, _, version = name.partition("@")
    if base not in _REGISTRY:
        raise BenchmarkError(f"unknown benchmark {name!r}; available: {', '.join(benchmark_names())}")
    spec = _REGISTRY[base]
    if version and version != str(spec.version):
        raise BenchmarkError(f"benchmark {base!r} is at version {spec.version} in this release, not {version}")
    return spec


# --- the built-in benchmark ------------------------------------------------------------------

#: Channel statistics of glyphs100 (train split, 500 per class, seed 0), images scaled to [0, 1].
GLYPHS_NORM = Normalization(mean=(0.502, 0.500, 0.501), std=(0.294, 0.282, 0.298))

#: Seed of the generated images and of the few-shot picks; part of the benchmark's definition.
GLYPHS_DATA_SEED = 0


def _glyphs_loader(train_per_class: int, test_per_class: int, name: str) -> Callable[[LoadOptions], Benchmark]:
    def load(options: LoadOptions) -> Benchmark:
        from .data.glyphs import load_glyphs

        train, test, manifest = load_glyphs(
            options.cache_dir / "datasets", train_per_class, test_per_class, seed=GLYPHS_DATA_SEED, log=options.log
        )
        schedule = Schedule.from_class_counts(
            name, train.labels, base_classes=60, ways=5, shots=5, rng=np.random.default_rng(GLYPHS_DATA_SEED)
        )
        return Benchmark(
            name=name,
            version=GLYPHS_VERSION,
            family="glyphs100",
            schedule=schedule,
            train=train,
            test=test,
            # No flips: a mirrored character is another character (or none).
            train_transform=CropFlip(GLYPHS_NORM, size=32, padding=4, flip=False),
            eval_transform=Evaluate(GLYPHS_NORM),
            manifest=manifest,
        )

    return load


for _name, _train, _test, _what in [
    ("glyphs100", 500, 100, "500 train / 100 test images per class"),
    ("glyphs100-small", 100, 40, "100 train / 40 test images per class, for plumbing checks: the quick "
                                  "presets' 4-epoch base session leaves it near chance; give it more base epochs"),
    ("glyphs100-tiny", 20, 10, "20 train / 10 test images per class, for tests and smoke runs"),
]:
    register_benchmark(
        BenchmarkSpec(
            name=_name,
            version=GLYPHS_VERSION,
            family="glyphs100",
            description=f"built-in: 100 rendered character classes, 32 px RGB, 60 base + 8 x 5-way 5-shot; {_what}",
            loader=_glyphs_loader(_train, _test, _name),
        )
    )


from . import real_benchmarks  # noqa: E402,F401  (registers cifar100, mini_imagenet, cub200)
