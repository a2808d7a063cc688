"""Joint training: the upper bound, trained on all data of every class seen so far.

An oracle that breaks the FSCIL protocol on purpose: it keeps every training image it has been
handed (the whole base set and every few shot; declared in ``memory()``) and after each session
trains on the union. This is the "joint-training" reference row of Tao et al., "Few-Shot
Class-Incremental Learning", CVPR 2020, and Zhang et al., "Few-Shot Incremental Learning with
Continually Evolved Classifiers", CVPR 2021. It is marked ``oracle`` in every report. Novel
classes still have only their 5 shots (that is all the training data the benchmark has for
them): what the oracle gains is that nothing is ever forgotten and old and new classes are
trained together.

Recipe (this implementation's choices; no recipe of this baseline is published). ``paper`` puts
it on the field's set-up per family (:mod:`fscil_bench.toolkit.field`: ResNet-20 on CIFAR,
ResNet-18 from scratch on mini, the ImageNet-pretrained ResNet-18 on CUB, CEC's views, CEC's base
optimiser and schedule with a linear head); the rest is ours:

* Session 0 is the shared cross-entropy base model (:func:`cross_entropy_base_model`): trained
  on all base data, which is all the data there is at that point.
* Each later session continues from the previous session's model. The linear head gets rows for
  the new classes, initialised from the new classes' mean features (weight imprinting, scaled to
  the old rows' mean norm, bias the old rows' mean), then the model is trained with cross-entropy
  on the union, drawn class-balanced (every seen class equally often: drawn instance-balanced, a
  5-shot class would appear once per 1,200 base images and barely be learned).
* ``train_backbone=True`` (``paper``): backbone and head are fine-tuned on images of the union,
  ``session.epochs`` epochs of as many class-balanced draws as the union holds (or
  ``samples_per_epoch``).
* ``train_backbone=False`` (``quick``): the backbone stays the base model's and the head is
  retrained on features of the union: a seeded pool of ``feature_pool_per_class`` base images per
  class (the pool whose features iCaRL, CEC and joint-balanced share through the feature cache) plus
  every few shot, each shot also under ``augmented_views`` training augmentations, by
  ``head_steps`` full-batch steps on the class-balanced (class-weighted) cross-entropy. This is
  the oracle for the decoupled methods (prototype, ETF, CEC), which freeze the backbone too, and
  it costs seconds on a CPU. Its lr 0.1 and 32 views were chosen among five settings on seed 0
  of glyphs100 (NOTES.md).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    SMOKE_SESSION_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.exemplars import ImageBank
from fscil_bench.toolkit.features import (
    FrozenFeatureMemo,
    base_feature_pool,
    class_means,
    extract_features,
    feature_views,
)
from fscil_bench.toolkit.field import FieldSetup, field_presets
from fscil_bench.toolkit.heads import LinearHeadOutputs, grow_linear
from fscil_bench.toolkit.training import (
    OptimisationLoop,
    SGDRecipe,
    sgd,
    train_supervised,
)


@dataclass(frozen=True)
class JointHparams:
    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    train_backbone: bool = False
    session: SGDRecipe = field(default_factory=lambda: SGDRecipe(epochs=1, lr=0.1, batch_size=256, schedule="cosine"))
    samples_per_epoch: int | None = None  # train_backbone: class-balanced draws per epoch (None: the union's size)
    feature_pool_per_class: int | None = 100  # not train_backbone: base images per class in the feature union
    augmented_views: int = 32  # not train_backbone: augmented copies of each few shot's features
    head_steps: int = 100  # not train_backbone: full-batch steps on the union's features (lr etc. from session)
    pretrained: str | None = None  # the backbone's initial weights (a known name or a path)
    frozen_stages: int = -1
    train_view: str | None = None  # the method's own views (None: the benchmark's)
    test_view: str | None = None


def _paper(setup: FieldSetup) -> JointHparams:
    return JointHparams(backbone=setup.backbone, base=setup.base, pretrained=setup.pretrained,
                        train_view=setup.train_view, test_view=setup.test_view, train_backbone=True,
                        session=SGDRecipe(epochs=10, lr=0.01, batch_size=128, schedule="cosine"))


class Joint(LinearHeadOutputs, MethodBase):
    name = "joint"
    oracle = True
    paper = "Tao et al., Few-Shot Class-Incremental Learning, CVPR 2020 (joint-training upper bound)"
    presets = {
        "quick": JointHparams(),
        "smoke": JointHparams(base=SMOKE_BASE_SGD, session=SMOKE_SESSION_SGD, samples_per_epoch=24,
                              feature_pool_per_class=8, augmented_views=2, head_steps=5),
        "paper": field_presets(_paper),
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp = ctx.hparams
        return [cross_entropy_recipe_for(ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: JointHparams = ctx.hparams
        # Copy: the cached base model may be shared with other methods in this process.
        self.model = copy.deepcopy(cross_entropy_base_model(session, ctx, hp.backbone, hp.base, hp.pretrained,
                                                            hp.frozen_stages))
        self.bank = ImageBank()
        self.bank.add(session.train)
        self.generator = torch.Generator().manual_seed(ctx.stage_seed("joint-sampling"))
        self.test_features = None
        if not hp.train_backbone:
            self.test_features = FrozenFeatureMemo(self.model.backbone)  # the backbone stays frozen
            key = ctx.extra["base_model"]["key"]
            _, self.features, self.feature_labels = base_feature_pool(
                ctx, session.train, self.model.backbone, key, hp.feature_pool_per_class)

    def fit_session(self, session: Session, ctx: Context) -> None:
        hp: JointHparams = ctx.hparams
        self.bank.add(session.train)
        self._grow_head(session, ctx)
        if hp.train_backbone:
            self._train_network(session, ctx, hp)
        else:
            self._train_head(session, ctx, hp)

    def _train_network(self, session: Session, ctx: Context, hp: JointHparams) -> None:
        n = hp.samples_per_epoch or len(self.bank)
        # One class-balanced draw per epoch, concatenated and walked once (train_supervised shuffles).
        picks = torch.cat([self.bank.class_balanced_indices(n, self.generator) for _ in range(hp.session.epochs)])
        e = hp.session.epochs
        recipe = dataclasses.replace(hp.session, epochs=1, warmup_epochs=hp.session.warmup_epochs / e,
                                     milestones=tuple(m / e for m in hp.session.milestones))
        train_supervised(self.model, self.bank.as_labelled(picks), F.cross_entropy, recipe, ctx,
                         desc=f"joint session {session.index}", generator=self.generator)

    def _train_head(self, session: Session, ctx: Context, hp: JointHparams) -> None:
        views = feature_views(self.model.backbone, session.train, ctx, hp.augmented_views, self.generator)
        labels = session.train.labels.to(ctx.device)
        self.features = torch.cat([self.features, *views.unbind(1)])
        self.feature_labels = torch.cat([self.feature_labels, labels.repeat(views.shape[1])])
        # Full-batch gradient descent on the features of the union, every class weighted equally
        # (the class-balanced loss; full batches keep a linear layer's steps cheap on a CPU).
        counts = torch.bincount(self.feature_labels, minlength=session.num_seen).float()
        class_weight = counts.sum() / (len(counts) * counts)
        head = self.model.head
        # One full batch per step: the session recipe's schedule (no warm-up) spread over head_steps.
        per_epoch = hp.head_steps / hp.session.epochs
        recipe = dataclasses.replace(hp.session, epochs=hp.head_steps, warmup_epochs=0,
                                     milestones=tuple(m * per_epoch for m in hp.session.milestones))
        loop = OptimisationLoop(sgd(head.parameters(), recipe), lambda step: recipe.lr_at(step, 1), ctx.device)
        for _ in range(hp.head_steps):
            loop.set_lr()
            loss = F.cross_entropy(head(self.features), self.feature_labels, weight=class_weight)
            loop.step(loss, len(self.feature_labels))

    @torch.no_grad()
    def _grow_head(self, session: Session, ctx: Context) -> None:
        """New rows imprinted from the new classes' mean features, scaled to the old rows' mean norm."""
        old = self.model.head
        feats, labels = extract_features(self.model.backbone, session.train, ctx)
        means = class_means(feats, labels, session.new_classes)
        rows = F.normalize(means, dim=1) * old.weight.norm(dim=1).mean()
        self.model.head = grow_linear(old, session.num_seen, rows, old.bias.mean())

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        if self.test_features is not None:
            return self.test_features(images)
        return self.model.backbone(images)

    def memory(self) -> MemoryDeclaration:
        features = len(getattr(self, "feature_labels", ()))
        dim = self.model.head.in_features
        return MemoryDeclaration(
            exemplars=len(self.bank),
            feature_vectors=features,
            bytes=self.bank.nbytes + features * dim * 4,
            notes="oracle: every training image of every session so far (all past training data)"
            + (f"; features of {features} of them" if features else ""),
        )
