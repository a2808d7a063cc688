"""Fine-tuning: the lower bound of FSCIL.

A backbone and a linear head are trained with cross-entropy on the base session; each later
session adds rows to the head for its new classes and trains the whole network on that
session's few shots alone, so old classes are forgotten (catastrophic forgetting). Reported as
the "Ft-CNN" baseline in Tao et al., "Few-Shot Class-Incremental Learning", CVPR 2020.
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
    cross_entropy_recipe,
)
from fscil_bench.toolkit.heads import LinearHeadOutputs, grow_linear
from fscil_bench.toolkit.training import SGDRecipe, train_supervised


@dataclass(frozen=True)
class FineTuneHparams:
    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    session: SGDRecipe = field(default_factory=lambda: SGDRecipe(epochs=20, lr=0.01, batch_size=32, schedule="constant"))


class FineTune(LinearHeadOutputs, MethodBase):
    name = "finetune"
    paper = "Tao et al., Few-Shot Class-Incremental Learning, CVPR 2020 (Ft-CNN baseline)"
    presets = {
        "quick": FineTuneHparams(),
        "smoke": FineTuneHparams(base=SMOKE_BASE_SGD, session=SMOKE_SESSION_SGD),
        "paper": {
            "default": FineTuneHparams(backbone="resnet18", base=SGDRecipe(epochs=100, lr=0.1, batch_size=128, warmup_epochs=1.0)),
        },
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        return [cross_entropy_recipe(ctx.hparams.backbone, ctx.hparams.base, ctx.benchmark.num_base_classes)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: FineTuneHparams = ctx.hparams
        # Copy: the cached base model may be shared with other methods in this process.
        self.model = copy.deepcopy(cross_entropy_base_model(session, ctx, hp.backbone, hp.base))

    def fit_session(self, session: Session, ctx: Context) -> None:
        hp: FineTuneHparams = ctx.hparams
        self.model.head = grow_linear(self.model.head, session.num_seen)
        train_supervised(self.model, session.train, F.cross_entropy, hp.session, ctx, desc=f"session {session.index}")

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return inference_network(self.model.backbone)(images)
