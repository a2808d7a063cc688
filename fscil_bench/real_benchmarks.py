"""The real-dataset benchmarks: ``cifar100``, ``mini_imagenet`` and ``cub200``.

Each is a dataset on disk (under ``--data-root`` / ``$FSCIL_DATA_ROOT``, in the layout the field
uses; see :mod:`fscil_bench.data.cifar100`, :mod:`~fscil_bench.data.mini_imagenet`,
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .benchmarks import Benchmark, BenchmarkError, BenchmarkSpec, LoadOptions, register_benchmark
from .data import cifar100, cub200, mini_imagenet
from .data.arrays import BatchTransform, ImageArray
from .data.image_files import DatasetError, SplitIndex, load_images_cached
from .data.transforms import CropFlip, Evaluate, Normalization, ResizedCropFlip
from .schedule import Schedule
from .schedule_files import ScheduleFile, ScheduleFileError, read_schedule_file

#: CIFAR-100 training-set channel mean and std.
CIFAR100_NORM = Normalization(mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761))

#: ImageNet channel mean and std (used for miniImageNet and CUB-200).
IMAGENET_NORM = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

#: Version of the three real benchmarks; bump on any change to a schedule, transform or stored size.
REAL_BENCHMARK_VERSION = 1

DATA_ROOT_ENV = "FSCIL_DATA_ROOT"


@dataclass(frozen=True)
class RealDataset:
    """How one real dataset is found, read, stored and transformed."""

    family: str
    title: str
    module: object  # fscil_bench.data.<family>
    stored_size: int
    fit: str | None  # how images are fitted to stored_size (None: stored as read, CIFAR)
    train_transform: BatchTransform
    eval_transform: BatchTransform
    description: str

    @property
    def source(self) -> str:
        return self.module.SOURCE

    def expected_layout(self, data_root: Path) -> str:
        return self.module.expected_layout(self.module.find_root(data_root))


DATASETS: dict[str, RealDataset] = {
    "cifar100": RealDataset(
        "cifar100", "CIFAR-100", cifar100, 32, None,
        CropFlip(CIFAR100_NORM, size=32, padding=4), Evaluate(CIFAR100_NORM),
        "CIFAR-100 (needs --data-root): 32 px, 60 base + 8 x 5-way 5-shot, standard FSCIL lists",
    ),
    "mini_imagenet": RealDataset(
        "mini_imagenet", "miniImageNet", mini_imagenet, mini_imagenet.STORED_SIZE, mini_imagenet.FIT,
        ResizedCropFlip(IMAGENET_NORM, size=84), Evaluate(IMAGENET_NORM, resize_to=92, crop=84),
        "miniImageNet (needs --data-root): 84 px, 60 base + 8 x 5-way 5-shot, standard FSCIL lists",
    ),
    "cub200": RealDataset(
        "cub200", "CUB-200-2011", cub200, cub200.STORED_SIZE, cub200.FIT,
        ResizedCropFlip(IMAGENET_NORM, size=224), Evaluate(IMAGENET_NORM, resize_to=256, crop=224),
        "CUB-200-2011 (needs --data-root): 224 px, 100 base + 10 x 10-way 5-shot, standard FSCIL lists",
    ),
}


@dataclass
class DatasetOnDisk:
    """A real dataset's two splits as indexed on disk; images are decoded (or read from the
    cache) only when :meth:`images` is called."""

    spec: RealDataset
    folder: Path
    train: SplitIndex
    test: SplitIndex
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # CIFAR: already read with the index

    def check_files(self) -> None:
        """Raise naming any image file the index lists that is not on disk."""
        if self.spec.family != "cifar100":
            self.spec.module.check_files(self.train)
            self.spec.module.check_files(self.test)

    def images(self, split: str, cache_dir: Path, log: Callable[[str], None] = print,
               workers: int | None = None) -> np.ndarray:
        if split in self.arrays:
            return self.arrays[split]
        index = self.train if split == "train" else self.test
        return load_images_cached(index.files, root=self.folder, dataset=self.spec.family, split=split,
                                  size=self.spec.stored_size, fit=self.spec.fit, cache_dir=cache_dir, log=log,
                                  workers=workers)


def resolve_data_root(family: str, data_root: Path | str | None) -> Path:
    """``data_root``, else ``$FSCIL_DATA_ROOT``; a clear :class:`BenchmarkError` if neither is set."""
    spec = DATASETS[family]
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise BenchmarkError(f"benchmark {family!r} needs the {spec.title} data set: pass --data-root DIR (or set "
                             f"{DATA_ROOT_ENV}) where DIR holds {spec.expected_layout(Path('DIR'))}. "
                             f"Get it from: {spec.source}")
    return Path(root).expanduser()


def open_dataset(family: str, data_root: Path) -> DatasetOnDisk:
    """Check the layout and index both splits (CIFAR: read them). Raises :class:`DatasetError`."""
    spec = DATASETS[family]
    folder = spec.module.check_layout(data_root)
    if family == "cifar100":
        train_arr, train = cifar100.read_split(folder, "train")
        test_arr, test = cifar100.read_split(folder, "test")
        return DatasetOnDisk(spec, folder, train, test, {"train": train_arr.images, "test": test_arr.images})
    if family == "mini_imagenet":
        train = mini_imagenet.index_split(folder, "train")
        test = mini_imagenet.index_split(folder, "test", classes=train.class_names)
        return DatasetOnDisk(spec, folder, train, test)
    train, test = cub200.index_splits(folder)
    return DatasetOnDisk(spec, folder, train, test)


def global_labels(disk: DatasetOnDisk, schedule: ScheduleFile) -> tuple[np.ndarray, np.ndarray]:
    """The train and test labels as the schedule's global class ids (matched by class name when
    the schedule names its classes). Raises :class:`DatasetError` for a class the schedule lacks."""
    where = schedule.path or schedule.name
    if schedule.class_names is None:
        top = max([schedule.num_classes] + [int(i.labels.max()) + 1 for i in (disk.train, disk.test) if len(i.labels)])
        lookup = np.arange(top, dtype=np.int64)
        lookup[lookup >= schedule.num_classes] = -1
    else:
        position = {n: g for g, n in enumerate(schedule.class_names)}
        lookup = np.array([position.get(n, -1) for n in disk.train.class_names], dtype=np.int64)
    out = []
    for index in (disk.train, disk.test):
        labels = lookup[index.labels] if len(index.labels) else index.labels
        bad = np.flatnonzero(labels < 0)
        if len(bad):
            first = int(index.labels[bad[0]])
            name = disk.train.class_names[first] if first < len(disk.train.class_names) else str(first)
            raise DatasetError(f"{disk.spec.title} file {index.source} has samples of class {name!r} (e.g. {index.ids[bad[0]]}), "
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
    spec = DATASETS[family]
    root = resolve_data_root(family, options.data_root)
    try:
        sched_file = read_schedule_file(schedule if schedule is not None else family)
        if sched_file.dataset and sched_file.dataset != family:
            raise ScheduleFileError(f"schedule {sched_file.path} is for {sched_file.dataset!r} data, not {family!r}")
        disk = open_dataset(family, root)
        train_labels, test_labels = global_labels(disk, sched_file)
        sched: Schedule = sched_file.to_schedule(disk.train.ids, train_labels, name or family)
        disk.check_files()
        train_images = disk.images("train", options.cache_dir, options.log, workers)
        test_images = disk.images("test", options.cache_dir, options.log, workers)
    except DatasetError as exc:
        raise BenchmarkError(str(exc)) from exc
    except ScheduleFileError as exc:
        raise BenchmarkError(f"{exc} (for a full report run 'fscil-bench data verify --benchmark {family}')") from exc
    manifest = {
        "dataset": family,
        "data_root": str(root),
        "dataset_folder": str(disk.folder),
        "schedule": {"file": sched_file.path, "sha256": sched_file.sha256, "name": sched_file.name},
        "stored_size": spec.stored_size,
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


def _loader(family: str) -> Callable[[LoadOptions], Benchmark]:
    def load(options: LoadOptions) -> Benchmark:
        return load_real_benchmark(family, options)

    return load


for _family, _spec in DATASETS.items():
    register_benchmark(BenchmarkSpec(name=_family, version=REAL_BENCHMARK_VERSION, family=_family,
                                     description=_spec.description, loader=_loader(_family)))
