"""Decoupled prototype learner with a cosine classifier.

The backbone is trained with cross-entropy on the base session and then frozen. Every class,
base or novel, is represented by the mean feature of its training samples (its prototype);
a test image gets the cosine similarity to each prototype as its logit. This "decoupled
cosine" baseline is the strong simple reference of Zhang et al., "Few-Shot Incremental
Learning with Continually Evolved Classifiers" (CEC), CVPR 2021, section 4.

With ``pretrained`` (the ``pretrained`` preset: ViT-B/16 pretrained on ImageNet-21k) the backbone
is not trained at all: it is the frozen pretrained network
(:func:`fscil_bench.integrations.pretrained.frozen_backbone`), and the run joins that weights'
track. Features of a frozen backbone are computed once and cached on disk, shared with every
other frozen-feature method on the same backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from typing import Any

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.integrations.pretrained import frozen_backbone
from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD, SMOKE_BASE_SGD
from fscil_bench.toolkit.features import class_means
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.training import SGDRecipe


@dataclass(frozen=True)
class PrototypeHparams:
    """``backbone`` and ``base``: the base model trained on the base session; with ``pretrained``
    (and ``backbone`` None: the weights' own network) the frozen pretrained backbone instead (see
    :class:`fscil_bench.integrations.pretrained.FrozenBackboneHparams` for the last three fields)."""

    backbone: str | None = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    scale: float = 16.0
    pretrained: str | None = None
    backbone_args: tuple[tuple[str, Any], ...] | None = None
    normalize_inputs: bool = True


class Prototype(MethodBase):
    name = "prototype"
    paper = "Zhang et al., Few-Shot Incremental Learning with Continually Evolved Classifiers, CVPR 2021 (decoupled cosine)"
    presets = {
        "quick": PrototypeHparams(),
        "smoke": PrototypeHparams(base=SMOKE_BASE_SGD),
        "paper": {"default": PrototypeHparams(backbone="resnet18", base=SGDRecipe(epochs=100, lr=0.1, batch_size=128, warmup_epochs=1.0))},
        "pretrained": PrototypeHparams(backbone=None, pretrained="timm-vit-b16-in21k"),
    }

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: PrototypeHparams = ctx.hparams
        self.backbone = frozen_backbone(session, ctx, hp)  # never changes again: features cached
        self.test_features = self.backbone.memo()
        self.scale = hp.scale
        self.prototypes = torch.empty(0, self.backbone.out_dim, device=ctx.device)
        self.fit_session(session, ctx)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = self.backbone.features(session.train)
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
