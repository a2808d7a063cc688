"""The built-in benchmark, ``glyphs100``, and its smaller variants for plumbing checks and tests.

100 classes of rendered characters (see :mod:`fscil_bench.data.glyphs`), generated on first use
and cached, in CIFAR-100's protocol shape: 60 base classes, then 8 sessions of 5-way 5-shot.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fscil_bench.benchmarks.benchmark import Benchmark, BenchmarkSpec, LoadOptions
from fscil_bench.data.glyphs import GLYPHS_VERSION
from fscil_bench.data.transforms import CropFlip, Evaluate, Normalization
from fscil_bench.schedules.schedule import Schedule

#: Channel statistics of glyphs100 (train split, 500 per class, seed 0), images scaled to [0, 1].
GLYPHS_NORM = Normalization(mean=(0.502, 0.500, 0.501), std=(0.294, 0.282, 0.298))

#: Seed of the generated images and of the few-shot picks; part of the benchmark's definition.
GLYPHS_DATA_SEED = 0


def _glyphs_loader(train_per_class: int, test_per_class: int, name: str) -> Callable[[LoadOptions], Benchmark]:
    def load(options: LoadOptions) -> Benchmark:
        from fscil_bench.data.glyphs import load_glyphs

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


#: (name, train images per class, test images per class, what it is for)
VARIANTS = [
    ("glyphs100", 500, 100, "500 train / 100 test images per class"),
    ("glyphs100-small", 100, 40, "100 train / 40 test images per class, for plumbing checks: the quick "
                                  "presets' 4-epoch base session leaves it near chance; give it more base epochs"),
    ("glyphs100-tiny", 20, 10, "20 train / 10 test images per class, for tests and smoke runs"),
]


def glyph_specs() -> list[BenchmarkSpec]:
    """The built-in benchmarks, one per variant."""
    return [
        BenchmarkSpec(
            name=name,
            version=GLYPHS_VERSION,
            family="glyphs100",
            description=f"built-in: 100 rendered character classes, 32 px RGB, 60 base + 8 x 5-way 5-shot; {what}",
            loader=_glyphs_loader(train, test, name),
        )
        for name, train, test, what in VARIANTS
    ]
