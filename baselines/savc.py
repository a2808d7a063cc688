"""SAVC: semantic-aware virtual contrastive learning.

Song et al., "Learning with Fantasy: Semantic-Aware Virtual Contrastive Constraint for Few-Shot
Class-Incremental Learning", CVPR 2023; official code zysong0113/SAVC@1543c9c (the paths below are
in that repository).

* Fantasy classes: ``m`` fixed transforms (``rotation2``: identity and a half turn; mini
  ``rot_color_perm12``: four rotations times three channel orders) turn class ``y`` into the
  virtual classes ``y m + j`` (``augmentations/fantasy.py``; :mod:`fscil_bench.toolkit.fixed_transforms`).
* Network (``models/savc/Network.py``): backbone, a cosine classifier ``16 cos(f, W)`` over the
  (class, fantasy) rows, and a MoCo branch: an MLP head ``Linear(d, d) - ReLU - Linear(d, moco_dim)``
  on the pooled feature, a key copy of backbone and head updated by momentum, a queue of keys with
  their joint labels.
* Base step (``models/savc/helper.py:12-79``): every image gives a classification view (the
  dataset's standard augmentation), a query and a key crop and 4 small crops
  (:mod:`fscil_bench.toolkit.multicrop`); every stream is expanded by the fantasies. Loss =
  ``CE(classifier over the B m base rows) + alpha L(query) + beta L(small crops)``, where ``L`` is
  the supervised contrastive loss of :mod:`fscil_bench.toolkit.contrastive` against the own key
  and the queued keys of the same joint label (``Network.py:106-164``, ``losses.py``); the keys
  are enqueued after every step. SGD (momentum 0.9, Nesterov, weight decay 5e-4) over everything.
* End of base and sessions (``fscil_trainer.py:116-155``): row ``c m + j`` of the classifier becomes
  the mean feature of class ``c``'s training images (test view) under fantasy ``j``; nothing is
  trained in the incremental sessions (the published commands do not set ``-incft``).
* Inference (``helper.py:188-217``): class ``c`` scores ``(1/m) sum_j 16 cos(f(T_j x), W[c m + j])``.

Where this implementation differs from the official code, and why:

* Small crops are scored against the key of their own image *and fantasy*. The official code lays
  the small crops out as (image, crop, fantasy) and regroups them four at a time as if they were
  (image x fantasy, crop) (``helper.py:29-39`` with ``Network.py:121-124``), so a group mixes
  fantasies and a small crop under a half turn is scored against the upright key's label: the
  paper's intent (every view of a virtual class is that class) is followed here.
* The small-crop rule is the code's: an overlap of at least 10% of the small crop's area with the
  key crop, ten tries, then an unconstrained crop (``constrained_cropping.py:166-196``); the paper
  describes the small crops as local views of the key.
* Checkpoint: the official code keeps the base epoch with the best test accuracy and reports the
  better of the trained and the mean classifier in session 0 (``fscil_trainer.py:89-129``); here the
  last epoch and the mean classifier, always.
* The cosine schedule is evaluated per step (the official one per epoch).

Presets. ``paper``: the README's three commands (``README.md:50,55,60``), every value from them or
``train.py``'s defaults (batch 128, temperature 16, 2 + 4 crops). ``quick`` keeps the whole method
(fantasy ``rotation2``, the classifier over joint labels, query, key and 4 constrained small crops of
CIFAR's sizes and scales with the supervised MoCo loss and a label queue of 8192, alpha 0.2 and
beta 0.8, means per (class, fantasy), fantasy-aggregated inference) and cuts the training to CPU
minutes: convnet4-small whose backbone (and key copy) starts from the suite's shared quick base
model (``warm_start``: cross-entropy, 4 epochs, trained through the benchmark's own transforms;
from scratch, one epoch of SAVC's loss leaves glyphs100 at chance), 1 epoch on 100 images per base
class at batch 64, lr 0.05 on a cosine schedule with a quarter-epoch warm-up, key momentum 0.99
(paper: ResNet-20, 600 epochs of every image at batch 128, lr 0.1, momentum 0.995, which would
leave the key encoder near its initialisation in so few steps).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.cache import stable_hash
from fscil_bench.data.augment import ColorJitter, HorizontalFlip, Pipeline, RandomApply, RandomCrop, RandomGrayscale
from fscil_bench.data.views import MethodViews, ViewInputs
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD, cached_model, warm_start_recipe, warm_start_weights
from fscil_bench.toolkit.contrastive import LabelledQueue, momentum_update, sup_contrastive_loss
from fscil_bench.toolkit.features import FrozenFeatureMemo, class_means, extract_features
from fscil_bench.toolkit.fixed_transforms import TransformSet, transform_set
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.multicrop import MultiCrops, WithCrops
from fscil_bench.toolkit.own_base import base_subset, train_on_raw_batches
from fscil_bench.toolkit.training import SGDRecipe, recipe_key


@dataclass(frozen=True)
class SAVCHparams:
    """``warm_start``: start the backbone from the shared cross-entropy base model of this recipe
    (None: from scratch or ``pretrained``)."""

    backbone: str = QUICK_BACKBONE
    pretrained: str | None = None
    warm_start: SGDRecipe | None = QUICK_BASE_SGD
    base: SGDRecipe = SGDRecipe(epochs=1, lr=0.05, batch_size=64, warmup_epochs=0.25, nesterov=True)
    base_images_per_class: int | None = 100  # None: every base image
    fantasy: str = "rotation2"
    scale: float = 16.0  # classifier temperature
    moco_dim: int = 32
    queue_size: int = 8192
    key_momentum: float = 0.99
    contrast_temperature: float = 0.07
    alpha: float = 0.2  # weight of the query crops' contrastive loss
    beta: float = 0.8  # weight of the small crops'
    large_size: int = 32
    large_scale: tuple[float, float] = (0.9, 1.0)
    small_size: int = 18
    small_scale: tuple[float, float] = (0.2, 0.7)
    small_crops: int = 4
    train_view: str | None = "savc-cifar-train"  # the classification view (None: pad-and-crop at large_size)
    test_view: str | None = "savc-cifar-test"  # None: the image as it is


def _paper_sgd(epochs: int, lr: float, milestones: tuple[int, ...] = ()) -> SGDRecipe:
    # fscil_trainer.py:41-49: SGD, momentum 0.9, Nesterov, wd 5e-4 (-decay 0.0005); gamma 0.1
    schedule = "step" if milestones else "cosine"
    return SGDRecipe(epochs=epochs, lr=lr, batch_size=128, schedule=schedule, milestones=milestones, gamma=0.1,
                     nesterov=True)


_PAPER_CIFAR = SAVCHparams(backbone="resnet20", warm_start=None, base=_paper_sgd(600, 0.1), base_images_per_class=None,
                           key_momentum=0.995)
_PAPER_IMAGENET_SIZES = dict(moco_dim=128, key_momentum=0.999, large_scale=(0.2, 1.0), small_scale=(0.05, 0.14))


class SAVCNetwork(nn.Module):
    """Query backbone and MLP head, their momentum copies, the cosine classifier and the key queue."""

    def __init__(self, backbone: nn.Module, rows: int, moco_dim: int, queue_size: int):
        super().__init__()
        d = backbone.out_dim
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, moco_dim))
        self.classifier = nn.Linear(d, rows, bias=False)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.queue = LabelledQueue(moco_dim, queue_size)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def key(self, x: torch.Tensor, momentum: float) -> torch.Tensor:
        momentum_update(self.key_backbone, self.backbone, momentum)
        momentum_update(self.key_head, self.head, momentum)
        return F.normalize(self.key_head(self.key_backbone(x)), dim=1)


def small_crop_key_rows(batch: int, crops: int, m: int, device: torch.device | None = None) -> torch.Tensor:
    """For the small-crop rows ((image, crop), fantasy) of :meth:`TransformSet.expand`, the row of
    their key, (image, fantasy): the crop is scored against its own image under its own fantasy."""
    own = torch.arange(batch * crops * m, device=device)
    return own // (crops * m) * m + own % m


def savc_loss(net: SAVCNetwork, views: tuple[torch.Tensor, ...], labels: torch.Tensor, fantasy: TransformSet,
              num_base: int, hp: SAVCHparams) -> torch.Tensor:
    """One base step's loss (module docstring) from the classification view, query, key and small
    crops ``(B, c, 3, S, S)`` of a batch; enqueues the keys."""
    classify, query, key, small = views
    m, crops = fantasy.size, small.shape[1]
    targets = fantasy.joint_labels(labels)
    logits = cosine_logits(net.backbone(fantasy.expand(classify)), net.classifier.weight[: num_base * m], hp.scale)
    q = net.query(fantasy.expand(query))
    q_small = net.query(fantasy.expand(small.flatten(0, 1)))  # rows ((image, crop), fantasy)
    k = net.key(fantasy.expand(key), hp.key_momentum)
    queued = net.queue.keys.clone()  # the push below overwrites the queue before the backward pass
    positives = torch.cat([torch.ones_like(targets, dtype=torch.bool).view(-1, 1), net.queue.positives(targets)], 1)
    key_row = small_crop_key_rows(len(labels), crops, m, q.device)
    t = hp.contrast_temperature
    logits_q = torch.cat([(q * k).sum(1, keepdim=True), q @ queued.T], 1) / t
    logits_s = torch.cat([(q_small * k[key_row]).sum(1, keepdim=True), q_small @ queued.T], 1) / t
    loss = F.cross_entropy(logits, targets) + hp.alpha * sup_contrastive_loss(logits_q, positives) \
        + hp.beta * sup_contrastive_loss(logits_s, positives[key_row])
    net.queue.push(k, targets)
    return loss


class SAVC(MethodBase):
    name = "savc"
    paper = ("Song et al., Learning with Fantasy: Semantic-Aware Virtual Contrastive Constraint for Few-Shot "
             "Class-Incremental Learning (SAVC), CVPR 2023")
    presets = {
        "quick": SAVCHparams(),
        "smoke": SAVCHparams(warm_start=None, base=SGDRecipe(epochs=1, lr=0.05, batch_size=16, nesterov=True), base_images_per_class=None,
                             moco_dim=8, queue_size=64, large_size=16, small_size=16, train_view=None, test_view=None),
        "paper": {
            "cifar100": _PAPER_CIFAR,
            "mini_imagenet": dataclasses.replace(
                _PAPER_CIFAR, backbone="resnet18", base=_paper_sgd(120, 0.1, (40, 70, 100)), fantasy="rot_color_perm12",
                large_size=84, small_size=50, train_view="cec-mini-train", test_view="cec-mini-test", **_PAPER_IMAGENET_SIZES),
            "cub200": dataclasses.replace(
                _PAPER_CIFAR, backbone="resnet18", pretrained="torchvision-resnet18-imagenet1k-v1",
                base=_paper_sgd(120, 0.002, (60, 80, 100)), large_size=224, small_size=96, train_view="cec-cub-train",
                test_view="cec-cub-test", **_PAPER_IMAGENET_SIZES),
            "default": _PAPER_CIFAR,
        },
    }

    @classmethod
    def views(cls, hparams: SAVCHparams, inputs: ViewInputs) -> MethodViews:
        """The named classification and test views, the classification view carrying the
        multi-crops of :mod:`fscil_bench.toolkit.multicrop` (their settings are hyperparameters,
        part of the base model's key). Without a named view: pad-and-crop at ``large_size`` and
        the image as it is."""
        named = super().views(hparams, inputs)
        flip = (HorizontalFlip(0.5),) if inputs.flip else ()
        size = hparams.large_size
        train = named.train or Pipeline(inputs.norm, (RandomCrop(size, padding=size // 8), *flip), uint8_steps=True)
        test = named.test or Pipeline(inputs.norm, uint8_steps=True)
        jitter = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, uint8_levels=True)
        secondary = Pipeline(train.norm, (*flip, RandomApply(jitter, 0.8), RandomGrayscale(0.2)), uint8_steps=True)
        crops = MultiCrops(secondary, hparams.large_size, hparams.large_scale, hparams.small_size, hparams.small_scale,
                           hparams.small_crops)
        return MethodViews(train=WithCrops(train, crops), test=test, train_name=named.train_name,
                           test_name=named.test_name)

    @staticmethod
    def base_recipe(hp: SAVCHparams, ctx: Context, init: dict[str, Any], warm: dict[str, Any] | None) -> dict[str, Any]:
        """The cache key material of the base model (``init``: the backbone's identity; ``warm``:
        the recipe of the model it starts from)."""
        return {"kind": "savc", "backbone": hp.backbone, "sgd": recipe_key(hp.base),
                "classes": ctx.benchmark.num_base_classes,
                **{f.name: getattr(hp, f.name) for f in dataclasses.fields(hp)
                   if f.name not in ("backbone", "base", "pretrained", "warm_start", "train_view", "test_view")},
                "warm_start": warm, **init}

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: SAVCHparams = ctx.hparams
        warm = [] if hp.warm_start is None else [warm_start_recipe(ctx, hp.backbone, hp.warm_start)]
        init = backbone_init(ctx, hp.backbone, hp.pretrained).identity
        return warm + [self.base_recipe(hp, ctx, init, warm[0] if warm else None)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: SAVCHparams = ctx.hparams
        self.fantasy = transform_set(hp.fantasy)
        m, num_base = self.fantasy.size, session.num_seen
        init = backbone_init(ctx, hp.backbone, hp.pretrained)
        warm_weights, warm_recipe = warm_start_weights(session, ctx, hp.backbone, hp.warm_start)
        recipe = self.base_recipe(hp, ctx, init.identity, warm_recipe)
        generator = torch.Generator().manual_seed(ctx.stage_seed("savc-base", stable_hash(recipe)))
        data = base_subset(session.train, hp.base_images_per_class, ctx)
        view = session.train.train_transform
        if not isinstance(view, WithCrops):
            raise TypeError("savc trains through its own views (SAVC.views); got a session without them")

        def train(model: SAVCNetwork) -> None:
            if warm_weights is not None:  # before the key encoder copies it: the copies start equal
                model.backbone.load_state_dict(warm_weights)
                model.key_backbone.load_state_dict(warm_weights)

            def batch_loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                crops = view.crops(images, generator)
                return savc_loss(model, (view(images, generator), *crops), labels, self.fantasy, num_base, hp)

            train_on_raw_batches(model, data, batch_loss, hp.base, ctx, "SAVC base session", generator,
                                 params=[p for n, p in model.named_parameters() if not n.startswith("key_")])

        build = lambda: SAVCNetwork(init.build(), num_base * m, hp.moco_dim, hp.queue_size)  # noqa: E731
        self.backbone = cached_model(ctx, recipe, build, train, data=data).backbone
        self.test_features = FrozenFeatureMemo(self._fantasy_features)  # the backbone never changes again
        self.scale, self.rows = hp.scale, torch.empty(0, self.backbone.out_dim, device=ctx.device)
        self.fit_session(session, ctx)

    @torch.no_grad()
    def _fantasy_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, m d)``: the features of every fantasy of every image, side by side."""
        self.backbone.eval()
        return self.backbone(self.fantasy.expand(images)).view(len(images), -1)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = extract_features(self._fantasy_features, session.train, ctx)
        means = class_means(feats, labels, session.new_classes)  # (classes, m d): row c m + j below
        self.rows = torch.cat([self.rows, means.view(-1, self.backbone.out_dim)])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fantasy.aggregated_cosine(features, self.rows, len(self.rows) // self.fantasy.size, self.scale)

    def classifier_weights(self) -> torch.Tensor:
        """Row ``c``: the ``m`` fantasy means of class ``c`` side by side (the space of :meth:`embed`)."""
        return self.rows.view(-1, self.fantasy.size * self.backbone.out_dim)

    def memory(self) -> MemoryDeclaration:
        n, d = self.rows.shape
        return MemoryDeclaration(feature_vectors=n, bytes=n * d * 4,
                                 notes="one mean feature per seen (class, fantasy) pair: the classifier")
