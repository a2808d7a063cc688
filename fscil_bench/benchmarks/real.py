"""The real-dataset benchmarks: ``cifar100``, ``mini_imagenet`` and ``cub200``.

Each is a dataset on disk (under ``--data-root`` / ``$FSCIL_DATA_ROOT``, in the layout the field
uses), read by its family (:mod:`fscil_bench.data.cifar100`, :mod:`~fscil_bench.data.mini_imagenet`,
:mod:`~fscil_bench.data.cub200`), a shipped schedule file (``sessions/<name>.json[.gz]``, built from
the standard TOPIC/CEC index lists by ``scripts/build_schedules.py``) and the standard transforms:

==============  ===========  ==========================================  ===================================
benchmark       stored size  train transform                             test transform
==============  ===========  ==========================================  ===================================
cifar100        32 x 32      random crop 32 (4 px zero padding) + flip   none
mini_imagenet   84 x 84      random resized crop 84 + flip               resize 92, centre crop 84
cub200          256 x 256    random resized crop 224 + flip              (resize 256,) centre crop 224
==============  ===========  ==========================================  ===================================

CUB images are stored as their centre 256 x 256 square after resizing the shorter side to 256
(see :mod:`fscil_bench.data.cub200` for how that differs from resizing on the fly).

Normalisation constants (per channel, images scaled to [0, 1]) are the values published with the
datasets' standard training code: CIFAR-100's training-set statistics for CIFAR-100, ImageNet's
for miniImageNet and CUB-200 (both are ImageNet images or trained on ImageNet-style pipelines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fscil_bench.benchmarks.benchmark import (
    Benchmark,
    BenchmarkError,
    BenchmarkSpec,
    LoadOptions,
)
from fscil_bench.data.arrays import BatchTransform, ImageArray
from fscil_bench.data.families import get_family
from fscil_bench.data.family import DatasetFamily, DatasetIndex
from fscil_bench.data.image_files import DatasetError, load_images_cached
from fscil_bench.data.transforms import (
    CropFlip,
    Evaluate,
    Normalization,
    ResizedCropFlip,
)
from fscil_bench.defaults import DATA_ROOT_ENV
from fscil_bench.schedules.files import (
    ScheduleFile,
    ScheduleFileError,
    read_schedule_file,
)
from fscil_bench.schedules.schedule import Schedule

#: CIFAR-100 training-set channel mean and std.
CIFAR100_NORM = Normalization(mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761))

#: ImageNet channel mean and std (used for miniImageNet and CUB-200).
IMAGENET_NORM = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

#: Version of the three real benchmarks; bump on any change to a schedule, transform or stored size.
REAL_BENCHMARK_VERSION = 1


@dataclass(frozen=True)
class RealBenchmark:
    """A real benchmark: a dataset family with the benchmark's standard transforms."""

    family: str
    train_transform: BatchTransform
    eval_transform: BatchTransform
    description: str

    @property
    def reader(self) -> DatasetFamily:
        return get_family(self.family)


#: One row per real benchmark (its schedule is ``sessions/<family>.json[.gz]``).
REAL_BENCHMARKS: dict[str, RealBenchmark] = {
    "cifar100": RealBenchmark(
        "cifar100", CropFlip(CIFAR100_NORM, size=32, padding=4), Evaluate(CIFAR100_NORM),
        "CIFAR-100 (needs --data-root): 32 px, 60 base + 8 x 5-way 5-shot, standard FSCIL lists",
    ),
    "mini_imagenet": RealBenchmark(
        "mini_imagenet", ResizedCropFlip(IMAGENET_NORM, size=84), Evaluate(IMAGENET_NORM, resize_to=92, crop=84),
        "miniImageNet (needs --data-root): 84 px, 60 base + 8 x 5-way 5-shot, standard FSCIL lists",
    ),
    "cub200": RealBenchmark(
        "cub200", ResizedCropFlip(IMAGENET_NORM, size=224), Evaluate(IMAGENET_NORM, resize_to=256, crop=224),
        "CUB-200-2011 (needs --data-root): 224 px, 100 base + 10 x 10-way 5-shot, standard FSCIL lists",
    ),
}


def resolve_data_root(family: str, data_root: Path | str | None) -> Path:
    """``data_root``, else ``$FSCIL_DATA_ROOT``; a clear :class:`BenchmarkError` if neither is set."""
    reader = get_family(family)
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise BenchmarkError(f"benchmark {family!r} needs the {reader.title} data set: pass --data-root DIR (or set "
                             f"{DATA_ROOT_ENV}) where DIR holds {reader.expected_layout(reader.find_root(Path('DIR')))}. "
                             f"Get it from: {reader.source}")
    return Path(root).expanduser()


def open_dataset(family: str, data_root: Path) -> DatasetIndex:
    """Check the layout and index both splits (CIFAR: read them). Raises :class:`DatasetError`."""
    reader = get_family(family)
    return reader.index(reader.check_layout(data_root))


def split_images(family: str, index: DatasetIndex, split: str, cache_dir: Path, log=print,
                 workers: int | None = None) -> np.ndarray:
    """The images of ``split`` (read with the index, or decoded once and cached)."""
    if split in index.images:
        return index.images[split]
    reader = get_family(family)
    split_index = index.train if split == "train" else index.test
    return load_images_cached(split_index.files, root=index.folder, dataset=family, split=split,
                              size=reader.stored_size, fit=reader.fit, cache_dir=cache_dir, log=log, workers=workers)


def global_labels(family: str, index: DatasetIndex, schedule: ScheduleFile) -> tuple[np.ndarray, np.ndarray]:
    """The train and test labels as the schedule's global class ids (matched by class name when
    the schedule names its classes). Raises :class:`DatasetError` for a class the schedule lacks."""
    where = schedule.path or schedule.name
    title = get_family(family).title
    if schedule.class_names is None:
        top = max([schedule.num_classes] + [int(i.labels.max()) + 1 for i in (index.train, index.test) if len(i.labels)])
        lookup = np.arange(top, dtype=np.int64)
        lookup[lookup >= schedule.num_classes] = -1
    else:
        position = {n: g for g, n in enumerate(schedule.class_names)}
        lookup = np.array([position.get(n, -1) for n in index.train.class_names], dtype=np.int64)
    out = []
    for split in (index.train, index.test):
        labels = lookup[split.labels] if len(split.labels) else split.labels
        bad = np.flatnonzero(labels < 0)
        if len(bad):
            first = int(split.labels[bad[0]])
            name = index.train.class_names[first] if first < len(index.train.class_names) else str(first)
            raise DatasetError(f"{title} file {split.source} has samples of class {name!r} (e.g. {split.ids[bad[0]]}), "
                               f"which the schedule {where} does not have ({schedule.num_classes} classes); the data on "
                               f"disk is not the data set the schedule was built for")
        out.append(labels)
    return out[0], out[1]


def load_real_benchmark(
    family: str,
    options: LoadOptions,
    schedule: str | Path | None = None,
    name: str | None = None,
    version: int = REAL_BENCHMARK_VERSION,
    workers: int | None = None,
) -> Benchmark:
    """Load ``family`` from ``options.data_root`` with its shipped schedule, or with ``schedule``
    (a schedule file path) instead. Every problem is one :class:`BenchmarkError`."""
    spec = REAL_BENCHMARKS[family]
    reader = spec.reader
    root = resolve_data_root(family, options.data_root)
    try:
        sched_file = read_schedule_file(schedule if schedule is not None else family)
        if sched_file.dataset and sched_file.dataset != family:
            raise ScheduleFileError(f"schedule {sched_file.path} is for {sched_file.dataset!r} data, not {family!r}")
        index = open_dataset(family, root)
        train_labels, test_labels = global_labels(family, index, sched_file)
        sched: Schedule = sched_file.to_schedule(index.train.ids, train_labels, name or family)
        reader.check_files(index)
        train_images = split_images(family, index, "train", options.cache_dir, options.log, workers)
        test_images = split_images(family, index, "test", options.cache_dir, options.log, workers)
    except DatasetError as exc:
        raise BenchmarkError(str(exc)) from exc
    except ScheduleFileError as exc:
        raise BenchmarkError(f"{exc} (for a full report run 'fscil-bench data verify --benchmark {family}')") from exc
    manifest = {
        "dataset": family,
        "data_root": str(root),
        "dataset_folder": str(index.folder),
        "schedule": {"file": sched_file.path, "sha256": sched_file.sha256, "name": sched_file.name},
        "stored_size": reader.stored_size,
        "train_images": len(train_labels),
        "test_images": len(test_labels),
        "normalization": {"mean": list(spec.eval_transform.norm.mean), "std": list(spec.eval_transform.norm.std)},
    }
    return Benchmark(
        name=name or family,
        version=version,
        family=family,
        schedule=sched,
        train=ImageArray(train_images, train_labels),
        test=ImageArray(test_images, test_labels),
        train_transform=spec.train_transform,
        eval_transform=spec.eval_transform,
        manifest=manifest,
    )


def real_specs() -> list[BenchmarkSpec]:
    """The real benchmarks, one per row of :data:`REAL_BENCHMARKS`."""
    def loader(family: str):
        return lambda options: load_real_benchmark(family, options)

    return [BenchmarkSpec(name=family, version=REAL_BENCHMARK_VERSION, family=family, description=row.description,
                          loader=loader(family)) for family, row in REAL_BENCHMARKS.items()]
