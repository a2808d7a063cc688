#!/usr/bin/env python
"""Frozen-backbone feature extraction throughput and the cost of the frozen-feature methods.

Saves a randomly initialised timm ViT-B/16 (random weights time the same as trained ones) in
timm's format, then:

1. embeds every training and test image of the benchmark at the ViT's 224 px (images resized on
   the device) and prints images per second (the feature cache is empty);
2. runs ``simplecil``, ``fecam`` and ``ranpac`` (``pretrained`` preset settings, on that file)
   through every session, each reading the cached features, and prints each one's wall time.

    python perf/pretrained_features.py --device cuda                 # glyphs100, ViT-B/16, 224 px
    python perf/pretrained_features.py --short                       # CPU plumbing check: glyphs100-tiny, a 1-block ViT-Ti at 32 px

The figures it prints go into the README with the device named.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from fscil_bench.baselines.fecam import FeCAM
from fscil_bench.baselines.ranpac import RanPAC
from fscil_bench.baselines.simplecil import SimpleCIL
from fscil_bench.benchmarks.benchmark import LoadOptions
from fscil_bench.benchmarks.registry import get_benchmark
from fscil_bench.data.arrays import iterate_images
from fscil_bench.integrations.pretrained import pretrained_backbone
from fscil_bench.protocol import Context
from fscil_bench.run.runner import RunOptions, make_session, run_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="glyphs100")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--short", action="store_true", help="glyphs100-tiny and a 1-block ViT-Ti at 32 px (a CPU check)")
    parser.add_argument("--ranpac-m", type=int, default=10000, help="RanPAC's projection dimension M")
    args = parser.parse_args()
    import timm

    arch = "vit_tiny_patch16_224" if args.short else "vit_base_patch16_224"
    model_args = {"img_size": 32, "depth": 1} if args.short else {}
    bench_name = "glyphs100-tiny" if args.short else args.benchmark
    work = Path(tempfile.mkdtemp(prefix="fscil-pretrained-perf-"))
    torch.manual_seed(0)
    weights = work / "vit-b16-random.pth"
    torch.save(timm.create_model(arch, pretrained=False, num_classes=0, **model_args).state_dict(), weights)
    bench = get_benchmark(bench_name).load(LoadOptions(cache_dir=work / "cache", log=lambda m: None))
    device = torch.device(args.device)
    size = model_args.get("img_size", 224)
    print(f"{bench.id}: {len(bench.train)} training and {len(bench.test)} test images; {arch} {model_args or ''} "
          f"at {size} px on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'the CPU'}")

    ctx = Context.create(bench.info(), None, 0, device=device, cache_dir=work / "cache", log=lambda m: None)
    backbone = pretrained_backbone(ctx, str(weights), bench.eval_transform.norm, f"timm:{arch}", tuple(model_args.items()))
    session = make_session(bench, 0)
    backbone(next(session.train.batches(64, augment=False, device=device))[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for s in range(len(bench.schedule)):
        backbone.features(make_session(bench, s).train)
    memo = backbone.memo()
    for x in iterate_images(bench.test.images, bench.eval_transform, 256, device):
        memo(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    n = sum(len(s.train_indices) for s in bench.schedule.sessions) + len(bench.test)
    print(f"feature extraction: {n} images in {seconds:.1f} s = {n / seconds:.0f} images/s (cache empty)")

    options = RunOptions(device=device, cache_dir=work / "cache", log=lambda m: None)
    for method_cls, extra in ((SimpleCIL, {}), (FeCAM, {}), (RanPAC, {"projection_dim": args.ranpac_m})):
        hp = dataclasses.replace(method_cls.presets["pretrained"], pretrained=str(weights), backbone=f"timm:{arch}",
                                 backbone_args=tuple(model_args.items()), **extra)
        cls = type(method_cls.__name__, (method_cls,), {"presets": {"perf": hp}})
        result = run_method(bench, cls, "perf", 0, options)
        assert result.status == "completed", result.error
        embedded = result.extra["feature_extraction"]["images_embedded"]
        print(f"{method_cls.name:10s} {result.timing['total_seconds']:7.1f} s for {len(bench.schedule)} sessions "
              f"(fit {sum(result.timing['fit_seconds']):.1f} s, evaluation {sum(result.timing['eval_seconds']):.1f} s; "
              f"images embedded: {embedded})")


if __name__ == "__main__":
    main()
