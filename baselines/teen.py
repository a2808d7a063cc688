"""TEEN: training-free calibration of the novel prototypes.

Wang, Zhou, Ye and Zhan, "Few-Shot Class-Incremental Learning via Training-Free Prototype
Calibration", NeurIPS 2023; official code wangkiw/TEEN (read at 2ba5165). The base session trains
a backbone with cross-entropy under a cosine classifier at temperature ``T`` and represents every
base class by its mean feature (``models/teen/helper.py:7-68``). An incremental session trains
nothing: each new class's prototype, the mean feature of its shots, is pulled towards the base
prototypes it resembles (``models/teen/Network.py:85-100``, :func:`calibrate`):

    p = p_new / |p_new|,  b_j = base_j / |base_j|,  a = softmax_j(tau <p, b_j>),
    delta = normalise(sum_j a_j b_j),  p' = (1 - alpha) p + alpha delta.

Only the session's own new prototypes are calibrated, against the base prototypes only; earlier
novel prototypes stay as they were. A test image gets ``T * cos`` to every seen prototype.

Presets. ``paper`` per family (``scripts/cifar.sh``, ``mini_imagenet.sh``, ``cub.sh``;
``train.py:17-69``): CIFAR ResNet-20, 600 epochs, batch 256, lr 0.1 cosine, T 16, tau 16,
alpha 0.1; mini ResNet-18, 1000 epochs, batch 128, lr 0.1 cosine, T 32, and the defaults tau 16
and alpha 0.5 (the mini script sets neither); CUB ImageNet-pretrained ResNet-18, 400 epochs,
batch 128, lr 0.004 x0.25 at epochs 50, 100, ..., 300, T 32, tau 16, alpha 0.5. SGD momentum
0.9, Nesterov, weight decay 5e-4 (``utils.py:242-264``). Our choices: the base keeps its last
epoch (TEEN keeps the best test accuracy, and scores session 0 by the better of its trained
classifier and the prototypes); the cosine schedule moves every step rather than every epoch;
and the training views are CEC's (pad-crop + flip on CIFAR, random resized crop + flip on mini,
resize + random resized crop + flip on CUB). TEEN's data classes default to AutoAugment (and
Cutout on CIFAR) on CIFAR and mini (``dataloader/cifar100/cifar.py:53``,
``miniimagenet.py:15``), which the suite's views do not provide: expect lower base accuracy than
the paper there. ``quick`` calibrates on top of the shared quick base model (convnet4-small,
linear cross-entropy head) with CIFAR's T, tau and alpha. ``pretrained`` calibrates on a frozen
pretrained network (ViT-B/16 on ImageNet-21k; :func:`fscil_bench.integrations.pretrained.frozen_backbone`)
with no base training, with CIFAR's T, tau and alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.integrations.pretrained import FrozenBackbone, check_backbone_use, frozen_backbone
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.features import FrozenFeatureMemo, base_feature_pool, class_means, extract_features
from fscil_bench.toolkit.field import FIELD, FieldSetup
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.training import SGDRecipe


def calibrate(new: torch.Tensor, base: torch.Tensor, alpha: float, tau: float) -> torch.Tensor:
    """TEEN's calibrated prototypes ``(k, d)`` of ``new`` ``(k, d)`` against ``base`` ``(B, d)``
    (module docstring)."""
    p, b = F.normalize(new, dim=1), F.normalize(base, dim=1)
    delta = F.normalize(torch.softmax(tau * p @ b.T, dim=1) @ b, dim=1)
    return (1 - alpha) * p + alpha * delta


@dataclass(frozen=True)
class TEENHparams:
    """``temperature``: T of the base classifier and of the test logits; ``tau`` (TEEN's
    ``softmax_t``) and ``alpha`` (``shift_weight``): the calibration (module docstring).
    ``train_backbone=False`` (with ``pretrained``) calibrates on the pretrained network frozen,
    without a base session of training (``backbone``, ``backbone_args``, ``normalize_inputs``:
    :class:`fscil_bench.integrations.pretrained.FrozenBackboneHparams`)."""

    backbone: str | None = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    base_classifier: str = "linear"
    pretrained: str | None = None
    frozen_stages: int = -1
    train_view: str | None = None
    test_view: str | None = None
    temperature: float = 16.0
    tau: float = 16.0
    alpha: float = 0.1
    train_backbone: bool = True
    backbone_args: tuple[tuple[str, Any], ...] | None = None
    normalize_inputs: bool = True

    def __post_init__(self) -> None:
        check_backbone_use(self.backbone, self.pretrained, self.train_backbone)


def _paper(setup: FieldSetup, base: SGDRecipe, temperature: float, alpha: float) -> TEENHparams:
    return TEENHparams(backbone=setup.backbone, base=base, base_classifier="cosine", pretrained=setup.pretrained,
                       train_view=setup.train_view, test_view=setup.test_view, temperature=temperature, tau=16.0,
                       alpha=alpha)


_CIFAR = _paper(FIELD["cifar100"], SGDRecipe(epochs=600, lr=0.1, batch_size=256, nesterov=True, schedule="cosine",
                                             drop_last=False), temperature=16.0, alpha=0.1)


class TEEN(MethodBase):
    name = "teen"
    paper = "Wang et al., Few-Shot Class-Incremental Learning via Training-Free Prototype Calibration, NeurIPS 2023"
    presets = {
        "quick": TEENHparams(),
        "smoke": TEENHparams(base=SMOKE_BASE_SGD),
        "paper": {
            "cifar100": _CIFAR,
            "mini_imagenet": _paper(FIELD["mini_imagenet"], SGDRecipe(epochs=1000, lr=0.1, batch_size=128, nesterov=True,
                                                                      schedule="cosine", drop_last=False),
                                    temperature=32.0, alpha=0.5),
            "cub200": _paper(FIELD["cub200"], SGDRecipe(epochs=400, lr=0.004, batch_size=128, nesterov=True, schedule="step",
                                                        milestones=(50, 100, 150, 200, 250, 300), gamma=0.25,
                                                        drop_last=False), temperature=32.0, alpha=0.5),
            "default": _CIFAR,
        },
        "pretrained": TEENHparams(backbone=None, pretrained="timm-vit-b16-in21k", train_backbone=False),
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: TEENHparams = ctx.hparams
        if not hp.train_backbone:
            return []  # the frozen pretrained network: no base model
        return [cross_entropy_recipe_for(ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages,
                                         hp.base_classifier, hp.temperature)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: TEENHparams = ctx.hparams
        self.frozen: FrozenBackbone | None = None
        self.temperature, self.tau, self.alpha = hp.temperature, hp.tau, hp.alpha
        if not hp.train_backbone:
            self.frozen = self.backbone = frozen_backbone(session, ctx, hp)
            self.test_features = self.frozen.memo()  # kept on disk, shared by the methods on these weights
            feats, labels = self.frozen.features(session.train)
        else:
            base = cross_entropy_base_model(session, ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages,
                                            classifier=hp.base_classifier, scale=hp.temperature)
            self.backbone = base.backbone
            self.backbone.requires_grad_(False)
            self.test_features = FrozenFeatureMemo(self.backbone)  # the backbone never changes again
            _, feats, labels = base_feature_pool(ctx, session.train, self.backbone, ctx.extra["base_model"]["key"], None)
        self.prototypes = class_means(feats, labels, session.new_classes)
        self.num_base = len(self.prototypes)  # the calibration's anchors are the first rows

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = (self.frozen.features(session.train) if self.frozen is not None
                         else extract_features(self.backbone, session.train, ctx))
        new = calibrate(class_means(feats, labels, session.new_classes), self.prototypes[: self.num_base], self.alpha, self.tau)
        self.prototypes = torch.cat([self.prototypes, new])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(features, self.prototypes, self.temperature)

    def classifier_weights(self) -> torch.Tensor:
        return self.prototypes

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        return MemoryDeclaration(feature_vectors=n, bytes=n * d * 4,
                                 notes="one prototype per seen class (the novel ones calibrated)")
