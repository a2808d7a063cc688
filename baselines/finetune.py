"""Fine-tuning: the lower bound of FSCIL.

A backbone and a linear head are trained with cross-entropy on the base session; each later
session adds rows to the head for its new classes and trains the whole network on that
session's few shots alone, so old classes are forgotten (catastrophic forgetting). Reported as
the "Ft-CNN" baseline in Tao et al., "Few-Shot Class-Incremental Learning", CVPR 2020.

Presets. No recipe of this baseline is published. ``paper`` puts it on the field's set-up per
family (:mod:`fscil_bench.toolkit.field`: ResNet-20 on CIFAR, ResNet-18 from scratch on mini, the
ImageNet-pretrained ResNet-18 on CUB, CEC's views): the base model is trained with CEC's base
optimiser and schedule and a linear head (our choice), and each session trains 20 epochs of SGD
at lr 0.01, batch 32 (our choice).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fscil_bench import Context, MethodBase, Session
from fscil_bench.models.inference import inference_network
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    SMOKE_SESSION_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.field import FieldSetup, field_presets
from fscil_bench.toolkit.heads import LinearHeadOutputs, grow_linear
from fscil_bench.toolkit.training import SGDRecipe, train_supervised


@dataclass(frozen=True)
class FineTuneHparams:
    """``pretrained``, ``frozen_stages``: the backbone's initial weights; ``train_view``,
    ``test_view``: the method's own views (None: the benchmark's)."""

    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    session: SGDRecipe = field(default_factory=lambda: SGDRecipe(epochs=20, lr=0.01, batch_size=32, schedule="constant"))
    pretrained: str | None = None
    frozen_stages: int = -1
    train_view: str | None = None
    test_view: str | None = None


def _paper(setup: FieldSetup) -> FineTuneHparams:
    return FineTuneHparams(backbone=setup.backbone, base=setup.base, pretrained=setup.pretrained,
                           train_view=setup.train_view, test_view=setup.test_view,
                           session=SGDRecipe(epochs=20, lr=0.01, batch_size=32, schedule="constant"))


class FineTune(LinearHeadOutputs, MethodBase):
    name = "finetune"
    paper = "Tao et al., Few-Shot Class-Incremental Learning, CVPR 2020 (Ft-CNN baseline)"
    presets = {
        "quick": FineTuneHparams(),
        "smoke": FineTuneHparams(base=SMOKE_BASE_SGD, session=SMOKE_SESSION_SGD),
        "paper": field_presets(_paper),
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp = ctx.hparams
        return [cross_entropy_recipe_for(ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: FineTuneHparams = ctx.hparams
        # Copy: the cached base model may be shared with other methods in this process.
        self.model = copy.deepcopy(cross_entropy_base_model(session, ctx, hp.backbone, hp.base, hp.pretrained,
                                                            hp.frozen_stages))

    def fit_session(self, session: Session, ctx: Context) -> None:
        hp: FineTuneHparams = ctx.hparams
        self.model.head = grow_linear(self.model.head, session.num_seen)
        train_supervised(self.model, session.train, F.cross_entropy, hp.session, ctx, desc=f"session {session.index}")

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return inference_network(self.model.backbone)(images)
