"""NC-FSCIL: a fixed simplex-ETF classifier, a projection neck and the dot-regression loss.

Yang et al., "Neural Collapse Inspired Feature-Classifier Alignment for Few-Shot Class
Incremental Learning", ICLR 2023. Before the base session one prototype per class of the whole
benchmark is fixed as a column of a random simplex equiangular tight frame (unit norm, pairwise
cosine -1/(K-1)) and never learned. Backbone and neck are trained with the dot-regression loss
``10 * 1/2 * mean_i (h_i^T w_{y_i} - 1)^2`` on the neck's unit-norm output ``h``. In each
incremental session the backbone is frozen and only the neck is fine-tuned, on the cached
backbone features of the few shots plus one kept mean feature per old class. Logits are the
cosine similarities to the seen classes' prototypes. The stages are in
:mod:`fscil_bench.toolkit.neck_learner`; the ETF, neck and loss in :mod:`fscil_bench.models.etf`,
:mod:`fscil_bench.models.neck` and :mod:`fscil_bench.toolkit.losses`.

Presets. ``paper`` is the published recipe per benchmark family, value by value, from the official
code (NeuralCollapseApplications/FSCIL@37a5475, with mmcv 1.6.1 for the schedules);
``fscil-bench recipe --method etf --benchmark B --preset paper`` prints it with the source of
every value (``fscil_bench/reporting/recipes_official.json``). glyphs100 takes CIFAR-100's recipe.

* Base session: ResNet-12 (CIFAR, mini) or the ImageNet-pretrained torchvision ResNet-18 with its
  stem and first stage frozen (CUB: the file ``torchvision-resnet18-imagenet1k-v1``, see
  ``fscil-bench weights``); batch 512 (8 GPUs x 64), SGD momentum 0.9, weight decay 5e-4, no
  dropped last batch; ``repeat`` passes per loader epoch (RepeatDataset 4 / 10 / 4). The schedule
  follows mmcv's iteration-based hooks: CIFAR, peak 0.25, a 100-step linear warm-up from 0.1x
  that multiplies the cosine, cosine to 1% of the peak over all but the last 10 steps, then 0.1%;
  miniImageNet, peak 0.25, a 3000-step warm-up from 0.25x, x0.25 at passes 200, 300, 350, 400
  and 450; CUB, peak 0.025, the CIFAR shape with a floor of 10% and a cool-down at 1%. CIFAR's
  batches are mixed (Mixup alpha 0.8 p 0.4, CutMix alpha 1 p 0.4, identity p 0.2, within each
  GPU's 64 images) and its loss is ``(1 + lambda) L(y_a) + (1 - lambda) L(y_b)``, the official
  code's rule. The training augmentation and the test view are NC-FSCIL's
  (:mod:`fscil_bench.data.views`: ``nc-cifar-*``, ``nc-mini-*``, ``nc-cub-*``).
* Incremental sessions: the features of the few shots under the test view only (no augmented
  view); a fresh SGD over the neck per session at 0.25 / 0.025 / 0.05, with mmcv's cosine of the
  incremental stage (counter from 1: steps 1-4 warmed at 0.28, 0.46, 0.64, 0.82 of the cosine,
  floor 1%, the last 5 steps at 0.1%); the per-session step lists (CIFAR 50, 75, 100, 120, 140,
  160, 200, 200; mini 100, 110, ..., 170; CUB 105, 110, ..., 150); batches of 64 from shuffled
  passes over the pool, remainder dropped; old novel classes' means repeated ``copy_list`` times
  (mini 1..8, CUB 1..10, i.e. 2, 3, ... from the second incremental session on); CIFAR adds the
  inverse-frequency reweighting (``with_len``) and feature mixup (lambda 0.5, p 0.75, on the neck's
  outputs before normalisation, within groups of 8).
* The ETF's basis is the Q factor of a uniform [0, 1) matrix, as the official code draws it.

Our choices where the official runs cannot be followed on one device: batches are mixed and
reweighted over the global batch on one process (NC-FSCIL: per GPU, 8 processes); CUB's SyncBN
needs ``--sync-batchnorm`` under ``torchrun``; the last epoch's checkpoint is kept (the official
code keeps the best base-class *test* accuracy: ``--preset paper+best-on-test`` reproduces that,
marked not protocol-clean in every report); the random streams differ (the numbers a seed gives
are not the official ones).

``quick`` (glyphs100, and the default for any other family) keeps the paper's neck, ETF
(d = 512), loss and incremental stage, but is sized for two CPU cores: the backbone is the
project's small ``convnet4-small`` (128-d features), taken from the shared cross-entropy base
model that the other baselines use (``warm_start``) and kept frozen (``train_backbone=False``);
in the base session only the neck is trained with the dot-regression loss, for 3 epochs at lr 0.2,
batch 128, on the backbone's cached features of the base training set (NOTES.md compares this with
training the backbone too). The two ablations inherit this recipe, so all three differ only in
classifier and loss. Each incremental session runs 100 neck steps on cached features (the test
view plus 4 augmented views per shot: this preset's choice), with CIFAR's inverse-frequency
reweighting (glyphs100 being CIFAR-shaped).

``pretrained`` (the pretrained track) is ``quick``'s recipe on a frozen ViT-B/16 pretrained on
ImageNet-21k (``backbone="timm:vit_base_patch16_224"``, built by
:class:`fscil_bench.integrations.pretrained.LibraryBackbones`) instead of the base model: only the
neck is trained, on the backbone's cached features, for 10 epochs instead of 3 (our choice: the
published recipe trains a ResNet end to end).
"""

from __future__ import annotations

from fscil_bench.data.mixing import BatchMix
from fscil_bench.integrations.pretrained import LibraryBackbones
from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD
from fscil_bench.toolkit.losses import dot_regression_loss
from fscil_bench.toolkit.neck_learner import FixedETFLearner, NeckLearnerHparams
from fscil_bench.toolkit.training import SGDRecipe, StepRecipe

#: NC-FSCIL's hyperparameters: see :class:`fscil_bench.toolkit.neck_learner.NeckLearnerHparams`.
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

#: The base optimiser shared by the three families (configs/_base_/schedules/*.py).
_BASE = dict(batch_size=512, momentum=0.9, weight_decay=5e-4, convention="mmcv", drop_last=False)


def _session(lr: float, first: int) -> StepRecipe:
    """The incremental stage's SGD (mmfscil/apis/fscil.py:565-583); ``first``: the first step count."""
    return StepRecipe(steps=first, lr=lr, batch_size=64, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                      convention="mmcv", first_step=1, warmup_steps=5, warmup_start=0.1, min_lr=0.01,
                      cooldown_steps=5, cooldown_factor=0.001)


_INCREMENTAL = dict(augmented_views=0, session_sampler="epochs", etf_basis="uniform")

_CIFAR = ETFHparams(
    backbone="resnet12",
    base=SGDRecipe(epochs=200, repeat=4, lr=0.25, schedule="cosine", warmup_steps=100, warmup_start=0.1,
                   min_lr=0.01, cooldown_steps=10, cooldown_factor=0.001,
                   batch_mix=BatchMix(mixup_alpha=0.8, cutmix_alpha=1.0, probs=(0.4, 0.4, 0.2), group=64,
                                      rule="nc-fscil"), **_BASE),
    session=_session(0.25, 50),
    session_steps=(50, 75, 100, 120, 140, 160, 200, 200),
    copy_list=(1, 1, 1, 1, 1, 1, 1, 1),
    session_reweight=True,
    feature_mixup=0.5,
    feature_mixup_prob=0.75,
    feature_mixup_group=8,
    train_view="nc-cifar-train",
    test_view="nc-cifar-test",
    **_INCREMENTAL,
)
_MINI = ETFHparams(
    backbone="resnet12",
    base=SGDRecipe(epochs=500, repeat=10, lr=0.25, schedule="step", milestones=(200, 300, 350, 400, 450),
                   gamma=0.25, warmup_steps=3000, warmup_start=0.25, **_BASE),
    session=_session(0.025, 100),
    session_steps=(100, 110, 120, 130, 140, 150, 160, 170),
    copy_list=(1, 2, 3, 4, 5, 6, 7, 8),
    train_view="nc-mini-train",
    test_view="nc-mini-test",
    **_INCREMENTAL,
)
_CUB = ETFHparams(
    backbone="resnet18",
    pretrained="torchvision-resnet18-imagenet1k-v1",
    frozen_stages=1,
    base=SGDRecipe(epochs=80, repeat=4, lr=0.025, schedule="cosine", warmup_steps=100, warmup_start=0.1,
                   min_lr=0.1, cooldown_steps=10, cooldown_factor=0.01, **_BASE),
    session=_session(0.05, 105),
    session_steps=(105, 110, 115, 120, 125, 130, 135, 140, 145, 150),
    copy_list=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
    train_view="nc-cub-train",
    test_view="nc-cub-test",
    **_INCREMENTAL,
)

_PRETRAINED = ETFHparams(
    backbone="timm:vit_base_patch16_224",
    pretrained="timm-vit-b16-in21k",
    base=SGDRecipe(epochs=10, lr=0.2, batch_size=128, warmup_epochs=1.0),
    train_backbone=False,
    session=StepRecipe(steps=100, lr=0.25, batch_size=64),
    feature_dim=512,
    session_reweight=True,
    augmented_views=4,
)

PRESETS = {
    "quick": {"glyphs100": _QUICK, "default": _QUICK},
    "smoke": ETFHparams(backbone=QUICK_BACKBONE, base=SGDRecipe(epochs=2, lr=0.05, batch_size=16, warmup_epochs=0.5),
                        session=StepRecipe(steps=4, lr=0.1, batch_size=8), feature_dim=128, augmented_views=1),
    "paper": {"cifar100": _CIFAR, "mini_imagenet": _MINI, "cub200": _CUB, "default": _CIFAR},
    "pretrained": _PRETRAINED,
}


class ETF(LibraryBackbones, FixedETFLearner):
    name = "etf"
    kind = "etf-dot-regression"
    paper = "Yang et al., Neural Collapse Inspired Feature-Classifier Alignment for Few-Shot Class Incremental Learning, ICLR 2023"
    presets = PRESETS

    def loss(self, head, features, labels, num_seen, reweight):
        return dot_regression_loss(features, labels, head.prototypes, reweight)
