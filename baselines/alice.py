"""ALICE: angular penalty loss, class augmentation and two augmented views in base training, then
nearest-class-mean inference on the backbone's features.

Peng et al., "Few-Shot Class-Incremental Learning from an Open-Set Perspective", ECCV 2022;
official code CanPeng123/FSCIL_ALICE@955e640 (the paths below are in that repository).

Base session (``main_base.py``, ``alice/train/train.py``, ``alice/model/model_factory.py``):

* Network: backbone -> projector ``Linear(d, f) - BN - ReLU - Linear(f, f) - BN`` (the last BN
  without affine parameters; ``model_factory.py:143-173``, two layers, ``f`` = feat_dim) -> cosine
  head over ``K`` classes (Xavier-uniform rows, no bias; ``:211-240``).
* Loss: CosFace, ``-log e^{s(cos_y - m)} / (e^{s(cos_y - m)} + sum_{j != y} e^{s cos_j})`` over all
  ``K`` columns (``alice/loss/criterion.py:35-51``), s = 30, m = 0.4.
* Two views: every image is augmented twice, independently, by the training view
  (``alice-*-train``); the loss is ``(L(view 1) + L(view 2)) / 2`` (``train.py:137-176``).
* Class augmentation ("data fusion", ``train.py:46-95``), after the augmentation: ``fusion_rounds``
  (4) times a random permutation ``p`` of the batch pairs image ``i`` with image ``p(i)``; every pair
  of two different classes ``a < b`` adds the image ``lam x_i + (1 - lam) x_p(i)`` of the pair class
  ``B + a (2B - a - 1) / 2 + (b - a) - 1`` to both views, with the same ``lam``; ``lam ~ Beta(20, 20)``
  is drawn per pair and set to 0.5 outside [0.4, 0.6]. In the base session the offset is the
  base-class count ``B`` (``train.py:76-95``), so the pair classes fill columns ``B .. B + B(B-1)/2 - 1``;
  the head has ``K = N + B(B-1)/2 + (T-1) w(w-1)/2`` columns (``model_factory.py:202-209``), the others
  never a target but still in CosFace's denominator.
* SGD (momentum 0.9, Nesterov, weight decay 5e-4) over everything, multi-step schedule
  (``main_base.py:124-125``).

Incremental sessions (``main_inc_ncm.py``): projector and head are dropped; features are the
backbone's pooled output under the test view (``alice-*-test``). A novel class's prototype is the
mean of its shots; a base class's is the mean of 5 "balanced" images (:func:`balanced_selection`,
``main_inc_ncm.py:302-334``). Prediction: the nearest prototype in cosine distance (``:413-424``).
Nothing is trained after the base session.

Where this implementation differs from the official code, and why:

* Checkpoint: the official code keeps the epoch with the best base-session *test* accuracy
  (``main_base.py:137-148``), a selection on the test set; here the last epoch, always.
* Backbones: CIFAR and mini use a CIFAR-style ResNet-18 (3x3 stride-1 stem, no max-pool, even at
  mini's 84 px; ``model_factory.py:219-220``), here ``resnet18-small-input`` (the same layers, with
  torchvision's initialisation: our choice); CUB uses torchvision's ResNet-18 with ImageNet weights
  (``main_base.py:89-90``). These are not the backbones of the CEC-derived papers (ResNet-20 on
  CIFAR, the 7x7-stem ResNet-18 on mini), so ALICE's published rows do not compare like for like.
* Every random number (permutations, ``lam``, augmentation) comes from the run's generators.

Presets. ``paper``: the published recipe per family (``run_base_*.sh``, ``run_inc_ncm_*.sh``; CUB
trains without fusion). ``quick`` keeps the whole method (two views of ALICE's augmentation, class
augmentation with per-pair ``lam``, CosFace with s 30 and m 0.4, the two-layer projector, balanced
5-image base prototypes, NCM on backbone features) and cuts the training to CPU minutes:
convnet4-small whose backbone starts from the suite's shared quick base model (``warm_start``:
cross-entropy, 4 epochs, trained through the benchmark's own transforms; from scratch, one epoch
of ALICE's loss leaves glyphs100 at chance), a 512-wide projector, one fusion round instead of
four, 1 epoch on 150 images per base class at batch 64, lr 0.05 on a cosine schedule with a
quarter-epoch warm-up (paper: 100 epochs of every image at batch 128, lr 0.01, steps at 60 and 70).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.cache import stable_hash
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD, cached_model, warm_start_recipe, warm_start_weights
from fscil_bench.toolkit.features import FrozenFeatureMemo, class_means, extract_features
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.own_base import base_subset, train_on_raw_batches
from fscil_bench.toolkit.training import SGDRecipe, recipe_key

REPO = "CanPeng123/FSCIL_ALICE@955e640"


@dataclass(frozen=True)
class AliceHparams:
    """``warm_start``: start the backbone from the shared cross-entropy base model of this recipe
    (None: from scratch or ``pretrained``)."""

    backbone: str = QUICK_BACKBONE
    pretrained: str | None = None
    warm_start: SGDRecipe | None = QUICK_BASE_SGD
    base: SGDRecipe = SGDRecipe(epochs=1, lr=0.05, batch_size=64, warmup_epochs=0.25, nesterov=True)
    base_images_per_class: int | None = 150  # None: every base image
    feat_dim: int = 512  # projector width
    scale: float = 30.0  # CosFace s
    margin: float = 0.4  # CosFace m
    fusion_rounds: int = 1  # permutations per batch (0: no class augmentation)
    fusion_alpha: float = 20.0
    base_prototype_images: int | None = 5  # balanced images per base prototype (None: all)
    train_view: str = "alice-cifar-train"
    test_view: str = "alice-cifar-test"


def _paper_sgd(epochs: int, lr: float, batch_size: int) -> SGDRecipe:
    # run_base_*.sh: milestones 60 70, gamma 0.1, momentum 0.9, wd 5e-4; main_base.py:124 Nesterov
    return SGDRecipe(epochs=epochs, lr=lr, batch_size=batch_size, schedule="step", milestones=(60, 70), gamma=0.1,
                     nesterov=True)


_PAPER_CIFAR = AliceHparams(backbone="resnet18-small-input", warm_start=None, base=_paper_sgd(100, 0.01, 128),
                            base_images_per_class=None, feat_dim=2048, fusion_rounds=4)


def pair_class(a: torch.Tensor, b: torch.Tensor, num_base: int) -> torch.Tensor:
    """The class of a fused pair of base classes ``a != b``: with ``lo < hi`` the two,
    ``num_base + lo (2 num_base - lo - 1) / 2 + (hi - lo) - 1`` (``train.py:76-95``, base session)."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    return num_base + lo * (2 * num_base - lo - 1) // 2 + (hi - lo) - 1


def head_size(num_classes: int, num_base: int, num_sessions: int, fusion: bool) -> int:
    """ALICE's head width ``K`` (``model_factory.py:202-209``)."""
    if not fusion:
        return num_classes
    ways = (num_classes - num_base) // max(1, num_sessions - 1)
    return num_classes + num_base * (num_base - 1) // 2 + (num_sessions - 1) * ways * (ways - 1) // 2


def fuse(views: list[torch.Tensor], labels: torch.Tensor, rounds: int, alpha: float, num_base: int,
         generator: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ALICE's class augmentation (module docstring): every view and the labels, with the fused
    pairs of ``rounds`` random permutations appended."""
    extra_views: list[list[torch.Tensor]] = [[] for _ in views]
    extra_labels = []
    for _ in range(rounds):
        perm = torch.randperm(len(labels), generator=generator).to(labels.device)
        first = torch.nonzero(labels != labels[perm]).flatten()
        second = perm[first]
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        lam = np.random.default_rng(seed).beta(alpha, alpha, size=len(first))
        lam[(lam < 0.4) | (lam > 0.6)] = 0.5
        lam_t = torch.as_tensor(lam, dtype=views[0].dtype, device=labels.device).view(-1, 1, 1, 1)
        for out, v in zip(extra_views, views):
            out.append(lam_t * v[first] + (1 - lam_t) * v[second])
        extra_labels.append(pair_class(labels[first], labels[second], num_base))
    return [torch.cat([v, *extra]) for v, extra in zip(views, extra_views)], torch.cat([labels, *extra_labels])


def cosface_loss(cosines: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """CosFace (``criterion.py:35-51``): cross-entropy of ``scale (cos - margin [j = y])``."""
    return F.cross_entropy(scale * (cosines - margin * F.one_hot(labels, cosines.shape[1])), labels)


def balanced_selection(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` rows ALICE averages into a base prototype (``main_inc_ncm.py:306-326``):
    keep the first ``k`` rows; then, in order, each later row replaces the *first* kept row whose
    cosine distance to the mean of all rows is larger than its own."""
    distance = (1 - F.cosine_similarity(features, features.mean(0, keepdim=True))).tolist()
    kept = list(range(min(k, len(distance))))
    kept_distance = [distance[i] for i in kept]
    for i in range(len(kept), len(distance)):
        for j, d in enumerate(kept_distance):
            if distance[i] < d:
                kept[j], kept_distance[j] = i, distance[i]
                break
    return torch.tensor(kept, dtype=torch.long)


class AliceNetwork(nn.Module):
    """Backbone, two-layer projector and a bias-free cosine head of ``outputs`` classes."""

    def __init__(self, backbone: nn.Module, feat_dim: int, outputs: int):
        super().__init__()
        self.backbone = backbone
        self.projector = nn.Sequential(
            nn.Linear(backbone.out_dim, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True),
            nn.Linear(feat_dim, feat_dim), nn.BatchNorm1d(feat_dim, affine=False))
        self.head = nn.Parameter(torch.empty(outputs, feat_dim))
        nn.init.xavier_uniform_(self.head)

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x)), dim=1) @ F.normalize(self.head, dim=1).T


class Alice(MethodBase):
    name = "alice"
    paper = "Peng et al., Few-Shot Class-Incremental Learning from an Open-Set Perspective (ALICE), ECCV 2022"
    presets = {
        "quick": AliceHparams(),
        "smoke": AliceHparams(warm_start=None, base=SGDRecipe(epochs=1, lr=0.05, batch_size=16, nesterov=True),
                              base_images_per_class=None, feat_dim=32),
        "paper": {
            "cifar100": _PAPER_CIFAR,
            "mini_imagenet": dataclasses.replace(_PAPER_CIFAR, base=_paper_sgd(200, 0.01, 64), train_view="alice-mini-train",
                                                 test_view="alice-mini-test"),
            "cub200": dataclasses.replace(_PAPER_CIFAR, backbone="resnet18", pretrained="torchvision-resnet18-imagenet1k-v1",
                                          base=_paper_sgd(100, 0.001, 512), fusion_rounds=0,
                                          train_view="alice-cub-train", test_view="alice-cub-test"),
            "default": _PAPER_CIFAR,
        },
    }

    @staticmethod
    def base_recipe(hp: AliceHparams, ctx: Context, init: dict[str, Any], warm: dict[str, Any] | None) -> dict[str, Any]:
        """The cache key material of the base model (``init``: the backbone's identity; ``warm``:
        the recipe of the model it starts from)."""
        info = ctx.benchmark
        outputs = head_size(info.num_classes, info.num_base_classes, info.num_sessions, hp.fusion_rounds > 0)
        return {"kind": "alice", "backbone": hp.backbone, "sgd": recipe_key(hp.base), "classes": info.num_base_classes,
                "outputs": outputs, "images_per_class": hp.base_images_per_class, "feat_dim": hp.feat_dim,
                "scale": hp.scale, "margin": hp.margin, "fusion_rounds": hp.fusion_rounds,
                "fusion_alpha": hp.fusion_alpha, "warm_start": warm, **init}

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: AliceHparams = ctx.hparams
        warm = [] if hp.warm_start is None else [warm_start_recipe(ctx, hp.backbone, hp.warm_start)]
        init = backbone_init(ctx, hp.backbone, hp.pretrained).identity
        return warm + [self.base_recipe(hp, ctx, init, warm[0] if warm else None)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: AliceHparams = ctx.hparams
        info = ctx.benchmark
        num_base = session.num_seen
        outputs = head_size(info.num_classes, num_base, info.num_sessions, hp.fusion_rounds > 0)
        init = backbone_init(ctx, hp.backbone, hp.pretrained)
        warm_weights, warm_recipe = warm_start_weights(session, ctx, hp.backbone, hp.warm_start)
        recipe = self.base_recipe(hp, ctx, init.identity, warm_recipe)
        generator = torch.Generator().manual_seed(ctx.stage_seed("alice-base", stable_hash(recipe)))
        data = base_subset(session.train, hp.base_images_per_class, ctx)
        view = session.train.train_transform

        def train(model: AliceNetwork) -> None:
            if warm_weights is not None:
                model.backbone.load_state_dict(warm_weights)

            def batch_loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                views = [view(images, generator), view(images, generator)]
                if hp.fusion_rounds:
                    views, labels = fuse(views, labels, hp.fusion_rounds, hp.fusion_alpha, num_base, generator)
                return sum(0.5 * cosface_loss(model.cosines(v), labels, hp.scale, hp.margin) for v in views)

            train_on_raw_batches(model, data, batch_loss, hp.base, ctx, "ALICE base session", generator)

        model = cached_model(ctx, recipe, lambda: AliceNetwork(init.build(), hp.feat_dim, outputs), train, data=data)
        self.backbone = model.backbone
        self.test_features = FrozenFeatureMemo(self.backbone)  # the backbone never changes again
        feats, labels = extract_features(self.backbone, session.train, ctx)
        rows = []
        for c in session.new_classes:
            own = feats[labels == c]
            if hp.base_prototype_images is not None:
                own = own[balanced_selection(own, hp.base_prototype_images).to(own.device)]
            rows.append(own.mean(0))
        self.prototypes = torch.stack(rows)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = extract_features(self.backbone, session.train, ctx)
        self.prototypes = torch.cat([self.prototypes, class_means(feats, labels, session.new_classes)])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity to every prototype (the nearest in cosine distance wins)."""
        return cosine_logits(features, self.prototypes)

    def classifier_weights(self) -> torch.Tensor:
        return self.prototypes

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        return MemoryDeclaration(feature_vectors=n, bytes=n * d * 4,
                                 notes="one prototype per seen class (base: mean of 5 balanced images)")
