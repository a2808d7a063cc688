"""NC-FSCIL: a fixed simplex-ETF classifier, a projection neck and the dot-regression loss.

Yang et al., "Neural Collapse Inspired Feature-Classifier Alignment for Few-Shot Class
Incremental Learning", ICLR 2023. Before the base session one prototype per class of the whole
benchmark is fixed as a column of a random simplex equiangular tight frame (unit norm, pairwise
cosine -1/(K-1)) and never learned. Backbone and neck are trained with the dot-regression loss
``10 * 1/2 * mean_i (h_i^T w_{y_i} - 1)^2`` on the neck's unit-norm output ``h``. In each
incremental session the backbone is frozen and only the neck is fine-tuned, on the cached
backbone features of the few shots plus one kept mean feature per old class. Logits are the
cosine similarities to the seen classes' prototypes. The stages are in
:mod:`fscil_bench.etf_learner`; the ETF, neck and loss in ``fscil_bench.models.etf``,
``fscil_bench.models.neck`` and ``fscil_bench.losses``.

Presets. ``paper`` follows the published recipe per benchmark family. The warm-up length (5
epochs), miniImageNet's step milestones (epochs 300 and 400, factor 0.1), the number of neck steps
per session (one value inside the published range) and 4 augmented views per few shot are this
implementation's choices where the recipe gives none or a range. For CUB the paper starts from
an ImageNet-pretrained ResNet-18: set ``pretrained`` to a known weights name or a local torchvision
``state_dict``; without it the backbone is trained from scratch, and the record's ``extra`` says
which.

``quick`` (glyphs100, and the default for any other family) keeps the paper's neck, ETF
(d = 512), loss and incremental stage, but is sized for two CPU cores: the backbone is the
project's small ``convnet4-small`` (128-d features), taken from the shared cross-entropy base
model that the other baselines use (``warm_start``) and kept frozen (``train_backbone=False``);
in the base session only the neck is trained with the dot-regression loss, for 3 epochs at lr 0.2,
batch 128, on the backbone's cached features of the base training set (NOTES.md compares this with
training the backbone too). The two ablations inherit this recipe, so all three differ only in
classifier and loss. Each incremental session runs 100 neck steps on cached features, with CIFAR's
inverse-frequency reweighting (glyphs100 being CIFAR-shaped).
"""

from __future__ import annotations

from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD
from fscil_bench.toolkit.losses import dot_regression_loss
from fscil_bench.toolkit.neck_learner import FixedETFLearner, NeckLearnerHparams
from fscil_bench.toolkit.training import SGDRecipe, StepRecipe

#: NC-FSCIL's hyperparameters: see :class:`fscil_bench.etf_learner.NeckLearnerHparams`.
ETFHparams = NeckLearnerHparams

_QUICK = ETFHparams(
    backbone=QUICK_BACKBONE,
    base=SGDRecipe(epochs=3, lr=0.2, batch_size=128, warmup_epochs=0.3),
    warm_start=QUICK_BASE_SGD,
    train_backbone=False,
    session=StepRecipe(steps=100, lr=0.25, batch_size=64),
    feature_dim=512,
    session_reweight=True,
    augmented_views=4,
)
_CIFAR = ETFHparams(
    backbone="resnet12",
    base=SGDRecipe(epochs=200, lr=0.25, batch_size=512, warmup_epochs=5, schedule="cosine"),
    session=StepRecipe(steps=100, lr=0.25, batch_size=64),
    session_reweight=True,
)
_MINI = ETFHparams(
    backbone="resnet12",
    base=SGDRecipe(epochs=500, lr=0.25, batch_size=512, warmup_epochs=5, schedule="step", milestones=(300, 400), gamma=0.1),
    session=StepRecipe(steps=150, lr=0.025, batch_size=64),
)
_CUB = ETFHparams(
    backbone="resnet18",
    base=SGDRecipe(epochs=80, lr=0.025, batch_size=512, warmup_epochs=5, schedule="cosine"),
    session=StepRecipe(steps=120, lr=0.05, batch_size=64),
)

PRESETS = {
    "quick": {"glyphs100": _QUICK, "default": _QUICK},
    "smoke": ETFHparams(backbone=QUICK_BACKBONE, base=SGDRecipe(epochs=2, lr=0.05, batch_size=16, warmup_epochs=0.5),
                        session=StepRecipe(steps=4, lr=0.1, batch_size=8), feature_dim=128, augmented_views=1),
    "paper": {"cifar100": _CIFAR, "mini_imagenet": _MINI, "cub200": _CUB, "default": _CIFAR},
}


class ETF(FixedETFLearner):
    name = "etf"
    kind = "etf-dot-regression"
    paper = "Yang et al., Neural Collapse Inspired Feature-Classifier Alignment for Few-Shot Class Incremental Learning, ICLR 2023"
    presets = PRESETS

    def loss(self, head, features, labels, num_seen, reweight):
        return dot_regression_loss(features, labels, head.prototypes, reweight)
