"""SimpleCIL: class-mean prototypes on a frozen pretrained backbone, cosine classifier.

Zhou, Cai, Ye, Zhan and Liu, "Revisiting Class-Incremental Learning with Pre-Trained Models:
Generalizability and Adaptivity are All You Need" (IJCV 2024; arXiv 2303.07338, 2023), code
https://github.com/zhoudw-zdw/RevisitingCIL. Nothing is trained: in every session the prototype
of each new class is the plain mean of the backbone's features of its training images (test-time
view), written into a cosine classifier; old prototypes never change. A test image's logits are
``scale * cos(f(x), p_c)`` over the seen classes.

Presets. ``paper`` is the official recipe (RevisitingCIL@a2e6b71): a frozen ViT-B/16 pretrained on
ImageNet-21k (``utils/inc_net.py``: ``timm.create_model("vit_base_patch16_224_in21k",
pretrained=True, num_classes=0)``, the pooled class token, 768-d; ``exps/simplecil/*.json``),
prototypes = raw mean features (``models/simplecil.py`` ``replace_fc``), cosine logits with
sigma 1 (``convs/linears.py`` ``CosineLinear``), inputs resized to 224 px and **not** normalised
(``utils/data.py`` ``build_transform``: Resize, CenterCrop, ToTensor): ``normalize_inputs=False``.
Our choices: the weights are ``timm-vit-b16-in21k`` (Google's original ViT-B/16 ImageNet-21k
port, whose file timm publishes with its hash; timm 0.6.12, used by the official code, resolves
that name to the AugReg ImageNet-21k weights instead), and the images are the benchmark's
test-time view resized on the device (see :mod:`fscil_bench.models.input_view`).
``pretrained`` is the same with the backbone's own normalisation (mean = std = 0.5), the setting
the track's other methods share. ``quick`` and ``smoke`` need no weights: the frozen backbone is
the shared cross-entropy base model trained on the base session (from-scratch track).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fscil_bench import Context, MemoryDeclaration, Session
from fscil_bench.integrations.pretrained import FrozenBackboneHparams, FrozenFeatureMethod
from fscil_bench.toolkit.base_models import SMOKE_BASE_SGD
from fscil_bench.toolkit.features import class_means
from fscil_bench.toolkit.heads import cosine_logits


@dataclass(frozen=True)
class SimpleCILHparams(FrozenBackboneHparams):
    scale: float = 1.0  # the cosine classifier's sigma (fixed 1 in the official code)


_PAPER = SimpleCILHparams(pretrained="timm-vit-b16-in21k", normalize_inputs=False)


class SimpleCIL(FrozenFeatureMethod):
    name = "simplecil"
    paper = ("Zhou et al., Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability and "
             "Adaptivity are All You Need, IJCV 2024 (arXiv 2303.07338)")
    presets = {
        "quick": SimpleCILHparams(),
        "smoke": SimpleCILHparams(base=SMOKE_BASE_SGD),
        "paper": _PAPER,
        "pretrained": SimpleCILHparams(pretrained="timm-vit-b16-in21k"),
    }

    def setup(self, ctx: Context) -> None:
        self.prototypes = torch.empty(0, self.backbone.out_dim, device=ctx.device)
        self.scale = ctx.hparams.scale

    def learn(self, features: torch.Tensor, labels: torch.Tensor, session: Session, ctx: Context) -> None:
        self.prototypes = torch.cat([self.prototypes, class_means(features, labels, session.new_classes)])

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(features, self.prototypes, self.scale)

    def classifier_weights(self) -> torch.Tensor:
        return self.prototypes

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        return MemoryDeclaration(feature_vectors=n, bytes=n * d * 4, notes="one mean feature per seen class")
