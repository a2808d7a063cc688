"""The base model of the decoupled methods (CEC, TEEN): a backbone trained with cross-entropy
on the base classes, under a linear or a cosine classifier, cached and shared.

CEC's decoupled-cosine base (Zhang et al., CVPR 2021; icoz69/CEC-CVPR2021@3a5d335
``models/base/Network.py:29-40``) and TEEN's base (Wang et al., NeurIPS 2023;
wangkiw/TEEN@2ba5165 ``models/teen/Network.py:26-37``) train ``scale * cos(f, w_c)`` over
bias-free class vectors ``w_c`` with cross-entropy on the base classes; the ``quick`` presets use
the suite's shared linear cross-entropy model instead
(:func:`~fscil_bench.toolkit.base_models.cross_entropy_base_model`).
:func:`decoupled_base_model` returns either, trained once per recipe and cached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench.cache import stable_hash
from fscil_bench.protocol import Context, Session
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.base_models import cached_model, cross_entropy_base_model
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.training import SGDRecipe, recipe_key, train_supervised

CLASSIFIERS = ("linear", "cosine")


class CosineClassifierModel(nn.Module):
    """A backbone followed by ``scale * cos(f, w_c)`` over ``num_classes`` bias-free vectors."""

    def __init__(self, backbone: nn.Module, num_classes: int, scale: float):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cosine_logits(self.backbone(x), self.head.weight, self.scale)


def decoupled_base_model(session: Session, ctx: Context, backbone: str, sgd: SGDRecipe, classifier: str = "linear",
                         scale: float = 16.0, pretrained: str | None = None, frozen_stages: int = -1) -> nn.Module:
    """The base model (with ``.backbone``) trained with cross-entropy on ``session``: the shared
    linear model (``classifier="linear"``) or a cosine classifier at temperature ``scale``
    (``"cosine"``), cached by its recipe (``ctx.extra["base_model"]["key"]`` names it)."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown base classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    if classifier == "linear":
        return cross_entropy_base_model(session, ctx, backbone, sgd, pretrained, frozen_stages)
    init = backbone_init(ctx, backbone, pretrained, frozen_stages)
    recipe = {"kind": "cross-entropy", "backbone": backbone, "sgd": recipe_key(sgd), "classes": session.num_seen,
              **init.identity, "classifier": "cosine", "scale": scale}
    generator = torch.Generator().manual_seed(ctx.stage_seed("base-data", stable_hash(recipe)))

    def train(model: nn.Module) -> None:
        train_supervised(model, session.train, F.cross_entropy, sgd, ctx, desc="base session", generator=generator)

    return cached_model(ctx, recipe, lambda: CosineClassifierModel(init.build(), session.num_seen, scale), train)
