"""A loaded benchmark under another few-shot draw (split) or class order.

The rules are those of :mod:`fscil_bench.schedules.draws`. A variant is the same benchmark (same
id and version, same images, same transforms) with another schedule and, for another class order,
train and test labels relabelled so that class ids stay in arrival order, as every method
expects. The base session is untouched: the same training samples with the same labels, so
base models and base-class features cached for the standard schedule serve every variant.
"""

from __future__ import annotations

import dataclasses

from fscil_bench.benchmarks.benchmark import Benchmark, BenchmarkError
from fscil_bench.data.arrays import ImageArray
from fscil_bench.schedules.draws import relabel, schedule_variant
from fscil_bench.schedules.schedule import ScheduleError


def benchmark_variant(bench: Benchmark, split: int = 0, order: int = 0) -> Benchmark:
    """``bench`` (loaded with its standard schedule) under few-shot draw ``split`` and class
    order ``order``; ``bench`` itself for (0, 0). Raises :class:`BenchmarkError` when a class has
    too few training samples for its shots."""
    if not bench.variant.is_standard:
        raise BenchmarkError(f"{bench.id}: variants are built from the standard schedule, not from split "
                             f"{bench.variant.split} order {bench.variant.order}")
    try:
        schedule, variant = schedule_variant(bench.schedule, bench.train.labels, split, order)
        if variant.is_standard:
            return dataclasses.replace(bench, variant=variant)
        train, test = bench.train, bench.test
        if variant.order:
            # The images are shared, not copied: only the labels change.
            train = ImageArray(train.images, relabel(train.labels, variant.arrival))
            test = ImageArray(test.images, relabel(test.labels, variant.arrival))
        schedule.check_labels(train.labels)
    except ScheduleError as exc:
        raise BenchmarkError(f"{bench.id} split {split} order {order}: {exc}") from exc
    return dataclasses.replace(bench, schedule=schedule, train=train, test=test, variant=variant)
