"""Shared fixtures: a tiny synthetic benchmark that trains in seconds; waiting on another process."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fscil_bench.benchmarks.benchmark import Benchmark
from fscil_bench.data.arrays import ImageArray
from fscil_bench.data.transforms import CropFlip, Evaluate, Normalization
from fscil_bench.run.runner import RunOptions
from fscil_bench.schedules.schedule import Schedule

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def synthetic_images(labels: np.ndarray, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Class c is a bright square at a class-specific place and colour, plus noise."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = divmod(int(c) % 9, 3)
        channel = int(c) // 9 % 3
        images[i, r * 5 : r * 5 + 5, col * 5 : col * 5 + 5, channel] = 230
    return images


def make_synthetic_benchmark(num_base: int = 4, ways: int = 2, sessions: int = 3, shots: int = 3,
                             train_per_class: int = 12, test_per_class: int = 5, seed: int = 0, size: int = 16) -> Benchmark:
    num_classes = num_base + ways * sessions
    rng = np.random.default_rng(seed)
    train_labels = np.repeat(np.arange(num_classes), train_per_class)
    test_labels = np.repeat(np.arange(num_classes), test_per_class)
    train = ImageArray(synthetic_images(train_labels, rng, size), train_labels)
    test = ImageArray(synthetic_images(test_labels, rng, size), test_labels)
    schedule = Schedule.from_class_counts("synthetic", train_labels, num_base, ways, shots, np.random.default_rng(seed))
    return Benchmark("synthetic", 1, "synthetic", schedule, train, test,
                     CropFlip(NORM, size=size, padding=2), Evaluate(NORM), manifest={})


@pytest.fixture
def synthetic_benchmark() -> Benchmark:
    return make_synthetic_benchmark()


@pytest.fixture
def run_options(tmp_path: Path) -> RunOptions:
    return RunOptions(cache_dir=tmp_path / "cache", log=lambda msg: None)


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen | None = None,
               safety_seconds: float = 600.0) -> None:
    """Return as soon as ``condition()`` holds (checked every 20 ms); fail if ``process`` ends
    first. The deadline is only a safety net for a hung process, never a timing window: tests
    act on what happened, not on how long it took."""
    deadline = time.monotonic() + safety_seconds
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {safety_seconds:.0f} s")
        time.sleep(0.02)
