"""A benchmark: a schedule plus its train and test images and transforms, under a versioned name.

A benchmark id is ``name@version`` (``glyphs100@1``). Anything that changes what a method is
trained or tested on - the schedule, a transform, the generated data - bumps the version;
records name the version they ran and reports never mix versions. Other few-shot draws and
class orders of the same benchmark (:mod:`fscil_bench.benchmarks.variants`) are not new
versions: a run names its split and order beside the benchmark id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fscil_bench.data.arrays import BatchTransform, ImageArray
from fscil_bench.data.transforms import Normalization
from fscil_bench.data.views import IMAGENET_NORM, ViewInputs
from fscil_bench.protocol import BenchmarkInfo
from fscil_bench.schedules.draws import Variant
from fscil_bench.schedules.schedule import Schedule


class BenchmarkError(RuntimeError):
    """A benchmark that cannot be loaded (unknown name, missing or malformed data)."""


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark: the schedule, the full train pool, the full test set, transforms.

    ``variant`` names the few-shot draw and class order of ``schedule`` (the standard ones
    unless built by :func:`fscil_bench.benchmarks.variants.benchmark_variant`).
    """

    name: str
    version: int
    family: str
    schedule: Schedule
    train: ImageArray
    test: ImageArray
    train_transform: BatchTransform
    eval_transform: BatchTransform
    manifest: dict
    variant: Variant = Variant()

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

    def view_inputs(self) -> ViewInputs:
        """What a method's own views may depend on: the family, the benchmark's normalisation (of
        its test transform; ImageNet's when that transform does not say) and whether its augmentation
        mirrors images (``flip``, default yes)."""
        norm = getattr(self.eval_transform, "norm", None)
        if not isinstance(norm, Normalization):
            norm = IMAGENET_NORM
        return ViewInputs(self.family, norm, bool(getattr(self.train_transform, "flip", True)))


@dataclass(frozen=True)
class LoadOptions:
    """Where a benchmark's data and caches live."""

    cache_dir: Path
    data_root: Path | None = None
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: its name, version, description and loader, and the folders its
    data comes from besides the data root and the cache (a custom benchmark's ``root``: a
    sandboxed method may not read them)."""

    name: str
    version: int
    family: str
    description: str
    loader: Callable[[LoadOptions], Benchmark]
    data_paths: tuple[Path, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def load(self, options: LoadOptions) -> Benchmark:
        return self.loader(options)
