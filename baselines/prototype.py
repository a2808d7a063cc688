"""Decoupled prototype learner with a cosine classifier.

The backbone is trained with cross-entropy on the base session and then frozen. Every class,
base or novel, is represented by the mean feature of its training samples (its prototype);
a test image gets the cosine similarity to each prototype as its logit. This "decoupled
cosine" baseline is the strong simple reference of Zhang et al., "Few-Shot Incremental
Learning with Continually Evolved Classifiers" (CEC), CVPR 2021, section 4.

Presets. ``paper`` is CEC's decoupled cosine as its official code trains it
(icoz69/CEC-CVPR2021@3a5d335; ``fscil-bench recipe --method prototype --preset paper`` prints every
value with its source): the field's backbone per family (ResNet-20 on CIFAR, ResNet-18 from
scratch on mini, the ImageNet-pretrained ResNet-18 on CUB, :mod:`fscil_bench.toolkit.field`), a
cosine classifier at temperature 16 trained with cross-entropy on the base classes (SGD Nesterov,
momentum 0.9, lr 0.1, weight decay 5e-4, batch 128, 100 epochs, x0.1 at CEC's milestones), CEC's
views, and then every class, base and novel, represented by its mean feature under the test
view (CEC replaces the base rows of its classifier by the base-class means too). Our choices: the
base batch is normalised as one batch (CEC's ``DataParallel`` normalised 4 shards of 32), the
last epoch is kept (CEC keeps the best base-class test accuracy: ``paper+best-on-test``, marked not
protocol-clean), and CUB's ImageNet weights are torchvision's current file of the same
``IMAGENET1K_V1`` weights (CEC downloads the older ``resnet18-5c106cde.pth``). glyphs100 takes CIFAR's.

``quick`` uses the shared linear cross-entropy base model of the other baselines (CPU, minutes).

``pretrained`` (ViT-B/16 pretrained on ImageNet-21k, ``train_backbone=False``) does not train the
backbone at all: it is the frozen pretrained network
(:func:`fscil_bench.integrations.pretrained.frozen_backbone`), whose features are computed once
and cached on disk, shared with every other frozen-feature method on the same backbone. A run
with ``pretrained`` weights (frozen or trained from them, as ``paper`` on CUB) joins that
weights' track (:mod:`fscil_bench.results.tracks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.integrations.pretrained import FrozenBackbone, check_backbone_use, frozen_backbone
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.features import (
    FrozenFeatureMemo,
    class_means,
    extract_features,
)
from fscil_bench.toolkit.field import FieldSetup, field_presets
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.training import SGDRecipe


@dataclass(frozen=True)
class PrototypeHparams:
    """``classifier``: the base model's, ``"linear"`` or ``"cosine"`` (at temperature ``scale``);
    ``scale`` is also the temperature of the prototype logits. ``pretrained``, ``frozen_stages``:
    the backbone's initial weights (:func:`fscil_bench.toolkit.backbones.backbone_init`);
    ``train_view``, ``test_view``: the method's own views (:mod:`fscil_bench.data.views`).

    ``train_backbone=False`` (with ``pretrained``) uses the pretrained network frozen, without a
    base session of training; ``backbone`` may then be a library network (``timm:<model>``,
    ``open_clip:<config>``) or None (the known weights' own), and ``backbone_args``,
    ``normalize_inputs`` are those of
    :class:`fscil_bench.integrations.pretrained.FrozenBackboneHparams`."""

    backbone: str | None = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    scale: float = 16.0
    classifier: str = "linear"
    pretrained: str | None = None
    frozen_stages: int = -1
    train_view: str | None = None
    test_view: str | None = None
    train_backbone: bool = True
    backbone_args: tuple[tuple[str, Any], ...] | None = None
    normalize_inputs: bool = True

    def __post_init__(self) -> None:
        check_backbone_use(self.backbone, self.pretrained, self.train_backbone)


def _paper(setup: FieldSetup) -> PrototypeHparams:
    return PrototypeHparams(backbone=setup.backbone, base=setup.base, scale=16.0, classifier="cosine",
                            pretrained=setup.pretrained, train_view=setup.train_view, test_view=setup.test_view)


class Prototype(MethodBase):
    name = "prototype"
    paper = "Zhang et al., Few-Shot Incremental Learning with Continually Evolved Classifiers, CVPR 2021 (decoupled cosine)"
    presets = {
        "quick": PrototypeHparams(),
        "smoke": PrototypeHparams(base=SMOKE_BASE_SGD),
        "paper": field_presets(_paper),
        "pretrained": PrototypeHparams(backbone=None, pretrained="timm-vit-b16-in21k", train_backbone=False),
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp = ctx.hparams
        if not hp.train_backbone:
            return []  # the frozen pretrained network: no base model
        return [cross_entropy_recipe_for(ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages,
                                         hp.classifier, hp.scale)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: PrototypeHparams = ctx.hparams
        self.frozen: FrozenBackbone | None = None
        if not hp.train_backbone:
            self.frozen = self.backbone = frozen_backbone(session, ctx, hp)
            self.test_features = self.frozen.memo()  # kept on disk, shared by the methods on these weights
        else:
            self.backbone = cross_entropy_base_model(session, ctx, hp.backbone, hp.base, hp.pretrained,
                                                     hp.frozen_stages, classifier=hp.classifier, scale=hp.scale).backbone
            self.test_features = FrozenFeatureMemo(self.backbone)  # the backbone never changes again
        self.scale = hp.scale
        self.prototypes = torch.empty(0, self.backbone.out_dim, device=ctx.device)
        self.fit_session(session, ctx)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = (self.frozen.features(session.train) if self.frozen is not None
                         else extract_features(self.backbone, session.train, ctx))
        self.prototypes = torch.cat([self.prototypes, class_means(feats, labels, session.new_classes)])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(features, self.prototypes, self.scale)

    def classifier_weights(self) -> torch.Tensor:
        return self.prototypes

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        return MemoryDeclaration(feature_vectors=n, bytes=n * d * 4, notes="one mean feature per seen class")
