"""Custom benchmarks described by a small YAML file: ``fscil-bench run --benchmark my.yaml``.

An ImageFolder-style data set (``root/train/<class>/*.jpg|png``, ``root/test/<class>/...``) with a
schedule drawn by :meth:`Schedule.from_class_counts`::

    name: flowers-fscil        # benchmark name (records are stored as name@version)
    version: 1                 # optional, default 1; bump when anything below changes
    root: data/flowers         # the data set; relative to this file (default: <data root>/<name>)
    base_classes: 10           # classes of the base session (all their training images)
    ways: 5                    # classes per incremental session
    shots: 5                   # training images per class in an incremental session
    seed: 0                    # picks the shots; part of the benchmark's definition
    class_order: [rose, tulip, ...]   # optional; default: sorted class folder names
    image_size: 64             # optional, default 84: stored size (shorter side, centre square)
    augment: resized_crop_flip # optional: resized_crop_flip (default) or crop_flip (pad 4, crop, flip)
    normalization: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}   # optional (ImageNet)

Or one of the real data sets with a schedule file of your own (built from your own index lists
by ``scripts/build_schedules.py``)::

    name: cifar100-mysplit
    dataset: cifar100          # cifar100, mini_imagenet or cub200 (found under --data-root)
    schedule: my_split.json    # relative to this file
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fscil_bench.benchmarks.benchmark import (
    Benchmark,
    BenchmarkError,
    BenchmarkSpec,
    LoadOptions,
)
from fscil_bench.data.arrays import ImageArray
from fscil_bench.data.image_files import DatasetError, load_images_cached
from fscil_bench.data.image_folder import FIT, index_split
from fscil_bench.data.transforms import (
    CropFlip,
    Evaluate,
    Normalization,
    ResizedCropFlip,
)
from fscil_bench.schedules.schedule import Schedule, ScheduleError

KEYS = {"name", "version", "root", "base_classes", "ways", "shots", "seed", "class_order", "image_size", "augment",
        "normalization", "dataset", "schedule", "description"}
DEFAULT_NORM = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchmarkError(f"cannot read benchmark file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise BenchmarkError(f"benchmark file {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise BenchmarkError(f"benchmark file {path} should be a YAML mapping (name: ..., base_classes: ..., ...)")
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise BenchmarkError(f"benchmark file {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    return doc


def _int(doc: dict, key: str, path: Path, default: int | None = None, minimum: int = 0) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BenchmarkError(f"benchmark file {path}: {key} should be an integer >= {minimum}, found {value!r}")
    return value


def _triple(value: Any, what: str, path: Path) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
        raise BenchmarkError(f"benchmark file {path}: normalization {what} should be three numbers, found {value!r}")
    return tuple(float(v) for v in value)


def custom_benchmark_spec(path: Path) -> BenchmarkSpec:
    """The benchmark a YAML file describes (the file is read now; the data when loaded)."""
    path = Path(path).expanduser()
    doc = _read_yaml(path)
    name = doc.get("name")
    if not isinstance(name, str) or not name or "@" in name or "/" in name:
        raise BenchmarkError(f"benchmark file {path}: 'name' should be a plain name (no '@' or '/'), found {name!r}")
    version = _int(doc, "version", path, default=1, minimum=1)
    if "dataset" in doc:
        return _real_with_schedule(path, doc, name, version)
    for key in ("base_classes", "ways", "shots"):
        if key not in doc:
            raise BenchmarkError(f"benchmark file {path}: missing '{key}' (needs name, base_classes, ways, shots)")
    base, ways, shots = (_int(doc, k, path, minimum=1) for k in ("base_classes", "ways", "shots"))
    seed = _int(doc, "seed", path, default=0)
    size = _int(doc, "image_size", path, default=84, minimum=8)
    augment = doc.get("augment", "resized_crop_flip")
    if augment not in ("resized_crop_flip", "crop_flip"):
        raise BenchmarkError(f"benchmark file {path}: augment should be resized_crop_flip or crop_flip, found {augment!r}")
    norm = DEFAULT_NORM
    if "normalization" in doc:
        raw = doc["normalization"]
        if not isinstance(raw, dict):
            raise BenchmarkError(f"benchmark file {path}: normalization should be {{mean: [...], std: [...]}}")
        norm = Normalization(mean=_triple(raw.get("mean"), "mean", path), std=_triple(raw.get("std"), "std", path))
    order = doc.get("class_order")
    if order is not None and (not isinstance(order, list) or not all(isinstance(c, str) for c in order)
                              or len(set(order)) != len(order)):
        raise BenchmarkError(f"benchmark file {path}: class_order should be a list of distinct class folder names")
    root_value = doc.get("root")

    def load(options: LoadOptions) -> Benchmark:
        if root_value is not None:
            root = Path(str(root_value)).expanduser()
            root = root if root.is_absolute() else path.parent / root
        elif options.data_root is not None:
            root = Path(options.data_root) / name
        else:
            raise BenchmarkError(f"benchmark file {path} has no 'root' and no --data-root was given; "
                                 f"set root: to the folder holding train/ and test/")
        try:
            train_index = index_split(root, "train", order)
            test_index = index_split(root, "test", train_index.class_names)
            schedule = Schedule.from_class_counts(name, train_index.labels, base, ways, shots, np.random.default_rng(seed))
            dataset = f"custom-{name}"
            kwargs = dict(root=root, dataset=dataset, size=size, fit=FIT, cache_dir=options.cache_dir, log=options.log)
            train_images = load_images_cached(train_index.files, split="train", **kwargs)
            test_images = load_images_cached(test_index.files, split="test", **kwargs)
        except (DatasetError, ScheduleError) as exc:
            raise BenchmarkError(f"benchmark {path}: {exc}") from exc
        train_t = ResizedCropFlip(norm, size=size) if augment == "resized_crop_flip" else CropFlip(norm, size=size, padding=4)
        manifest = {"dataset": "image_folder", "definition": str(path), "root": str(root), "classes": train_index.class_names,
                    "base_classes": base, "ways": ways, "shots": shots, "seed": seed, "image_size": size,
                    "augment": augment, "normalization": {"mean": list(norm.mean), "std": list(norm.std)}}
        return Benchmark(name=name, version=version, family="custom", schedule=schedule,
                         train=ImageArray(train_images, train_index.labels),
                         test=ImageArray(test_images, test_index.labels),
                         train_transform=train_t, eval_transform=Evaluate(norm), manifest=manifest)

    description = str(doc.get("description") or f"custom: {path} ({base} base + {ways}-way {shots}-shot sessions)")
    return BenchmarkSpec(name=name, version=version, family="custom", description=description, loader=load,
                         data_paths=_declared_root(doc, path))


def _real_with_schedule(path: Path, doc: dict, name: str, version: int) -> BenchmarkSpec:
    from fscil_bench.benchmarks.real import REAL_BENCHMARKS, load_real_benchmark

    family = doc["dataset"]
    if family not in REAL_BENCHMARKS:
        raise BenchmarkError(f"benchmark file {path}: dataset should be one of {', '.join(REAL_BENCHMARKS)}, "
                             f"found {family!r}")
    if not isinstance(doc.get("schedule"), str):
        raise BenchmarkError(f"benchmark file {path}: with 'dataset', give 'schedule: <schedule file>'")
    schedule = Path(doc["schedule"]).expanduser()
    schedule = schedule if schedule.is_absolute() else path.parent / schedule

    def load(options: LoadOptions) -> Benchmark:
        if doc.get("root") is not None:
            root = Path(str(doc["root"])).expanduser()
            options = LoadOptions(options.cache_dir, root if root.is_absolute() else path.parent / root, options.log)
        return load_real_benchmark(family, options, schedule=schedule, name=name, version=version)

    description = str(doc.get("description") or f"custom: {REAL_BENCHMARKS[family].reader.title} with schedule {schedule}")
    return BenchmarkSpec(name=name, version=version, family=family, description=description, loader=load,
                         data_paths=_declared_root(doc, path))


def _declared_root(doc: dict, path: Path) -> tuple[Path, ...]:
    """The ``root`` a benchmark file names (relative to the file), as ``data_paths``."""
    if doc.get("root") is None:
        return ()
    root = Path(str(doc["root"])).expanduser()
    return (root if root.is_absolute() else path.parent / root,)
