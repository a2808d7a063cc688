#!/usr/bin/env python
"""Decode throughput vs cached-load throughput of the real-data image path, side by side.

Runs the loader twice on the same data with an empty cache: the first pass decodes every JPEG
(PIL, several threads) and writes the uint8 cache; the second reads the cache (sha256 check,
memory map) and touches every pixel, so lazy memory-mapping does not flatter it.

    python perf/data_throughput.py                                   # generated CUB-like fixture
    python perf/data_throughput.py --dataset mini_imagenet --images 3000
    python perf/data_throughput.py --dataset cub200 --data-root /data  # a real data set

Without ``--data-root`` it writes a fixture in the data set's exact layout to a temporary folder:
JPEGs of 500 x 375 (CUB-like) or 84 x 84 (miniImageNet), smooth random content plus noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fscil_bench.benchmarks.real import open_dataset
from fscil_bench.data.image_files import default_workers

_NOISE: dict[tuple[int, int], list[np.ndarray]] = {}


def _picture(rng: np.random.Generator, h: int, w: int):
    """Smooth random colours plus one of a few fixed noise fields (so JPEGs have realistic sizes)."""
    from PIL import Image

    if (h, w) not in _NOISE:
        _NOISE[(h, w)] = [rng.integers(-12, 13, size=(h, w, 3), dtype=np.int16) for _ in range(8)]
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), dtype=np.int16)
    image += _NOISE[(h, w)][int(rng.integers(8))]
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def write_fixture(root: Path, dataset: str, images: int, classes: int = 10) -> None:
    """``images`` JPEGs in ``dataset``'s on-disk layout under ``root`` (about 1/3 of them test)."""
    rng = np.random.default_rng(0)
    per_class = max(1, images // classes)
    if dataset == "cub200":
        folder = root / "CUB_200_2011"
        lines, split, labels = [], [], []
        image_id = 0
        for c in range(classes):
            name = f"{c + 1:03d}.Bird_{c}"
            (folder / "images" / name).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                image_id += 1
                rel = f"{name}/Bird_{c}_{k:04d}.jpg"
                _picture(rng, 375, 500).save(folder / "images" / rel, quality=90)
                lines.append(f"{image_id} {rel}")
                split.append(f"{image_id} {int(k % 3 != 2)}")
                labels.append(f"{image_id} {c + 1}")
        (folder / "images.txt").write_text("\n".join(lines) + "\n")
        (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
        (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    elif dataset == "mini_imagenet":
        folder = root / "miniimagenet"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "split").mkdir(parents=True, exist_ok=True)
        rows = {"train": ["filename,label"], "test": ["filename,label"]}
        for c in range(classes):
            wnid = f"n{1000000 + c:08d}"
            for k in range(per_class):
                name = f"{wnid}{k:08d}.jpg"
                _picture(rng, 84, 84).save(folder / "images" / name, quality=90)
                rows["test" if k % 3 == 2 else "train"].append(f"{name},{wnid}")
        for split_name, text in rows.items():
            (folder / "split" / f"{split_name}.csv").write_text("\n".join(text) + "\n")
    else:
        raise SystemExit(f"no fixture for {dataset!r}; use cub200 or mini_imagenet")


def measure(dataset: str, data_root: Path, cache_dir: Path, workers: int) -> list[tuple[str, int, float]]:
    disk = open_dataset(dataset, data_root)
    n = len(disk.train) + len(disk.test)
    quiet = lambda message: None  # noqa: E731
    rows = []
    tic = time.perf_counter()
    for split in ("train", "test"):
        disk.images(split, cache_dir, quiet, workers)
    rows.append((f"decode JPEG + write cache ({workers} threads)", n, time.perf_counter() - tic))
    tic = time.perf_counter()
    total = 0
    for split in ("train", "test"):
        images = disk.images(split, cache_dir, quiet, workers)
        for start in range(0, len(images), 1024):
            total += int(np.asarray(images[start : start + 1024]).sum(dtype=np.uint64) > 0)
    rows.append(("cached load (sha256 + memmap + read all)", n, time.perf_counter() - tic))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cub200", choices=["cub200", "mini_imagenet"])
    parser.add_argument("--data-root", type=Path, help="a real data root (default: a generated fixture)")
    parser.add_argument("--images", type=int, default=1000, help="fixture size (default 1000)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="decode threads")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="fscil-throughput-"))
    try:
        data_root = args.data_root
        if data_root is None:
            data_root = scratch / "data"
            tic = time.perf_counter()
            write_fixture(data_root, args.dataset, args.images)
            print(f"wrote a {args.dataset} fixture of {args.images} JPEGs in {time.perf_counter() - tic:.1f}s")
        rows = measure(args.dataset, data_root, scratch / "cache", args.workers)
        size = {"cub200": 256, "mini_imagenet": 84}[args.dataset]
        print(f"{args.dataset} from {data_root} (stored at {size}x{size}; {os.cpu_count()} CPU cores)")
        print(f"  {'path':44s} {'images':>7s} {'seconds':>8s} {'images/s':>10s}")
        for what, n, seconds in rows:
            print(f"  {what:44s} {n:7d} {seconds:8.2f} {n / seconds:10.0f}")
        print(f"  cached load is {rows[0][2] / rows[1][2]:.0f}x faster than decoding")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
