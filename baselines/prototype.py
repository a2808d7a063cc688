"""Decoupled prototype learner with a cosine classifier.

The backbone is trained with cross-entropy on the base session and then frozen. Every class,
base or novel, is represented by the mean feature of its training samples (its prototype);
a test image gets the cosine similarity to each prototype as its logit. This "decoupled
cosine" baseline is the strong simple reference of Zhang et al., "Few-Shot Incremental
Learning with Continually Evolved Classifiers" (CEC), CVPR 2021, section 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe,
)
from fscil_bench.toolkit.features import (
    FrozenFeatureMemo,
    class_means,
    extract_features,
)
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.training import SGDRecipe


@dataclass(frozen=True)
class PrototypeHparams:
    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    scale: float = 16.0


class Prototype(MethodBase):
    name = "prototype"
    paper = "Zhang et al., Few-Shot Incremental Learning with Continually Evolved Classifiers, CVPR 2021 (decoupled cosine)"
    presets = {
        "quick": PrototypeHparams(),
        "smoke": PrototypeHparams(base=SMOKE_BASE_SGD),
        "paper": {"default": PrototypeHparams(backbone="resnet18", base=SGDRecipe(epochs=100, lr=0.1, batch_size=128, warmup_epochs=1.0))},
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        return [cross_entropy_recipe(ctx.hparams.backbone, ctx.hparams.base, ctx.benchmark.num_base_classes)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: PrototypeHparams = ctx.hparams
        self.backbone = cross_entropy_base_model(session, ctx, hp.backbone, hp.base).backbone
        self.test_features = FrozenFeatureMemo(self.backbone)  # the backbone never changes again
        self.scale = hp.scale
        self.prototypes = torch.empty(0, self.backbone.out_dim, device=ctx.device)
        self.fit_session(session, ctx)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = extract_features(self.backbone, session.train, ctx)
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
