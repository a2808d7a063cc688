#!/usr/bin/env python
"""Cost of the quick base training of alice, savc and s3c relative to the shared quick base model.

Times one training step of each method's ``quick`` recipe (its augmentation, its forward and
backward passes, its optimiser step) and one step of the shared cross-entropy base model
(``QUICK_BASE_SGD``: convnet4-small, pad-and-crop, batch 128), interleaved round by round so a
busy machine slows all of them alike, on random 32 px images. It prints seconds per step, the
ratio to the reference step, and each method's whole base training in reference steps and as a
fraction of the shared model's (4 epochs of glyphs100's 30,000 base images).

    python perf/own_base_cost.py            # 3 rounds of 2 steps each
    python perf/own_base_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from fscil_bench.baselines import alice, s3c, savc
from fscil_bench.benchmarks.builtin import GLYPHS_NORM
from fscil_bench.data.transforms import CropFlip
from fscil_bench.data.views import ViewInputs, build_view
from fscil_bench.models import build_backbone
from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD
from fscil_bench.toolkit.fixed_transforms import transform_set
from fscil_bench.toolkit.heads import BackboneWithHead
from fscil_bench.toolkit.training import sgd

BASE_CLASSES, BASE_IMAGES, CLASSES, SESSIONS = 60, 500, 100, 9  # glyphs100


def images(batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randint(0, 256, (batch, 32, 32, 3), dtype=torch.uint8, generator=g),
            torch.randint(0, BASE_CLASSES, (batch,), generator=g))


def step_functions(g: torch.Generator) -> dict:
    inputs = ViewInputs("glyphs100", GLYPHS_NORM, flip=False)
    crop = CropFlip(GLYPHS_NORM, 32, 4, flip=False)

    ref = BackboneWithHead(build_backbone(QUICK_BACKBONE), BASE_CLASSES)
    ref_opt = sgd(ref.parameters(), QUICK_BASE_SGD)

    def ref_loss():
        x, y = images(QUICK_BASE_SGD.batch_size, g)
        return F.cross_entropy(ref(crop(x, g)), y), ref_opt

    hp_a = alice.Alice.resolve_preset("quick", "glyphs100")
    view = build_view(hp_a.train_view, inputs)
    outputs = alice.head_size(CLASSES, BASE_CLASSES, SESSIONS, fusion=True)
    net_a = alice.AliceNetwork(build_backbone(hp_a.backbone), hp_a.feat_dim, outputs)
    opt_a = sgd(net_a.parameters(), hp_a.base)

    def alice_loss():
        x, y = images(hp_a.base.batch_size, g)
        views, y = alice.fuse([view(x, g), view(x, g)], y, hp_a.fusion_rounds, hp_a.fusion_alpha, BASE_CLASSES, g)
        return sum(0.5 * alice.cosface_loss(net_a.cosines(v), y, hp_a.scale, hp_a.margin) for v in views), opt_a

    hp_s = s3c.S3C.resolve_preset("quick", "glyphs100")
    rot = transform_set("rotation4")
    net_s = s3c.S3CNetwork(build_backbone(hp_s.backbone), 4 * CLASSES, hp_s.scale, hp_s.sigma_offset)
    opt_s = sgd(net_s.parameters(), hp_s.base)

    def s3c_loss():
        x, y = images(hp_s.base.batch_size, g)
        logits = net_s.classifier(net_s.features(rot.expand(crop(x, g))), net_s.classifier.draw(g))
        return F.cross_entropy(logits[:, : 4 * BASE_CLASSES], rot.joint_labels(y)), opt_s

    hp_v = savc.SAVC.resolve_preset("quick", "glyphs100")
    views_v = savc.SAVC.views(hp_v, inputs)
    fantasy = transform_set(hp_v.fantasy)
    net_v = savc.SAVCNetwork(build_backbone(hp_v.backbone), BASE_CLASSES * fantasy.size, hp_v.moco_dim, hp_v.queue_size)
    opt_v = sgd([p for p in net_v.parameters() if p.requires_grad], hp_v.base)

    def savc_loss():
        x, y = images(hp_v.base.batch_size, g)
        crops = views_v.train.crops(x, g)
        return savc.savc_loss(net_v, (views_v.train(x, g), *crops), y, fantasy, BASE_CLASSES, hp_v), opt_v

    def run(loss_fn):
        def step():
            loss, opt = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    steps_per_run = {
        "shared base": 4 * BASE_CLASSES * BASE_IMAGES // QUICK_BASE_SGD.batch_size,
        "alice": hp_a.base.epochs * BASE_CLASSES * hp_a.base_images_per_class // hp_a.base.batch_size,
        "s3c": hp_s.base.epochs * BASE_CLASSES * hp_s.base_images_per_class // hp_s.base.batch_size,
        "savc": hp_v.base.epochs * BASE_CLASSES * hp_v.base_images_per_class // hp_v.base.batch_size,
    }
    fns = {"shared base": run(ref_loss), "alice": run(alice_loss), "s3c": run(s3c_loss), "savc": run(savc_loss)}
    return {name: (fns[name], steps_per_run[name]) for name in fns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    fns = step_functions(g)
    for step, _ in fns.values():
        step()  # warm-up
    spent = dict.fromkeys(fns, 0.0)
    for _ in range(args.rounds):
        for name, (step, _) in fns.items():
            start = time.perf_counter()
            step()
            step()
            spent[name] += time.perf_counter() - start
    ref = spent["shared base"] / (2 * args.rounds)
    total_ref = fns["shared base"][1]
    print(f"{'':12s} {'s/step':>8s} {'ratio':>6s} {'steps':>6s} {'ref steps':>9s} {'of shared':>9s}")
    for name, (_, steps) in fns.items():
        per = spent[name] / (2 * args.rounds)
        print(f"{name:12s} {per:8.3f} {per / ref:6.2f} {steps:6d} {steps * per / ref:9.0f} {steps * per / ref / total_ref:9.2f}")


if __name__ == "__main__":
    main()
