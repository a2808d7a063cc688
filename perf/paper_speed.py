#!/usr/bin/env python
"""Base-session speed of the CIFAR-100 ``paper`` recipes of ``etf`` and ``prototype``.

    python perf/paper_speed.py --device cuda     # glyphs100 (30,000 base images, as CIFAR-100's), 4 passes each
    python perf/paper_speed.py --short           # glyphs100-tiny on the CPU, 2 passes: a check that it runs

Each method's ``paper`` preset for CIFAR-100 (glyphs100 takes it) is trained for ``--passes``
passes over the base session (one pass per loader epoch; everything else as published: ResNet-12,
batch 512, NC-FSCIL's views and batch Mixup/CutMix for ``etf``; ResNet-20, batch 128, CEC's views
and the cosine classifier for ``prototype``), through the method's own ``fit_base``. The time of
every pass is read from the training loop's progress; the first pass (warm-up: allocation,
cuDNN's autotuning) is left out. Printed per method: seconds per pass, images per second, and,
for ``etf``, how far that is from NC-FSCIL's official run (200 passes in 21.5 minutes on 8 A100s,
6.45 s per pass over CIFAR-100's 30,000 base images) and from 1.5 s per pass. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from fscil_bench.benchmarks import LoadOptions, get_benchmark
from fscil_bench.protocol import Context
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import make_session, method_views

#: NC-FSCIL's official CIFAR-100 base run (NeuralCollapseApplications/FSCIL logs): 200 passes in 21.5 min.
OFFICIAL_SECONDS_PER_PASS = 21.5 * 60 / 200
TARGET_SECONDS_PER_PASS = 1.5
CIFAR_BASE_IMAGES = 30_000


class PassTimer:
    """A progress sink that stamps the time each pass of the base session starts and ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stamps: list[float] = []

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __call__(self, iterable: Iterable, desc: str = "", total: int | None = None) -> Iterator:
        timed = desc == "base session"
        for item in iterable:
            if timed:
                self.stamps.append(self._now())
            yield item
        if timed:
            self.stamps.append(self._now())

    def seconds_per_pass(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def measure(method: str, bench, passes: int, device: torch.device, cache_dir: Path) -> tuple[list[float], int]:
    """Per-pass seconds of ``method``'s CIFAR-100 paper recipe on ``bench``'s base session, and its size."""
    cls = discover().get(method)
    hp = cls.resolve_preset("paper", "cifar100")
    hp = dataclasses.replace(hp, base=dataclasses.replace(hp.base, epochs=passes, repeat=1))
    views = method_views(cls, hp, bench)
    timer = PassTimer(device)
    ctx = Context.create(bench.info(), hp, 0, device=device, cache_dir=cache_dir, progress=timer, log=lambda m: None)
    ctx.views = views.identity
    session = make_session(bench, 0, views)
    cls().fit_base(session, ctx)
    return timer.seconds_per_pass(), len(session.train)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="glyphs100-tiny, 2 passes (a check that it runs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--passes", type=int, help="passes per method (default: 4; --short: 2)")
    parser.add_argument("--methods", default="etf,prototype")
    parser.add_argument("--cache-dir", help="dataset cache (default: $FSCIL_BENCH_CACHE or ~/.cache/fscil-bench)")
    args = parser.parse_args(argv)
    from fscil_bench.defaults import default_cache_dir

    device = torch.device(args.device)
    passes = args.passes or (2 if args.short else 4)
    name = "glyphs100-tiny" if args.short else "glyphs100"
    bench = get_benchmark(name).load(LoadOptions(cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                                                 log=lambda m: print(m, file=sys.stderr)))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, device {device} ({gpu}), torch {torch.__version__}, {passes} passes per method, first left out")
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as models:  # always train: never a cached model
            seconds, images = measure(method, bench, passes, device, Path(models))
        timed = seconds[1:] or seconds
        per_pass = statistics.median(timed)
        line = f"{method}: {per_pass:.2f} s per pass (median of {len(timed)}), {images / per_pass:,.0f} images/s over {images:,} images"
        if method == "etf":
            scaled = per_pass * CIFAR_BASE_IMAGES / images
            line += (f"; at CIFAR-100's {CIFAR_BASE_IMAGES:,} images {scaled:.2f} s per pass = "
                     f"{scaled / OFFICIAL_SECONDS_PER_PASS:.2f}x NC-FSCIL's 8-A100 run ({OFFICIAL_SECONDS_PER_PASS:.2f} s) "
                     f"and {scaled / TARGET_SECONDS_PER_PASS:.2f}x {TARGET_SECONDS_PER_PASS} s")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
