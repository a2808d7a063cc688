"""Joint training with the imbalance fix of Joint_FSCIL: the strongest joint reference.

Kim, Hwang, Woo and Singh, "Does Prior Data Matter? Exploring Joint Training in the Context of
Few-Shot Class-Incremental Learning", arXiv 2503.10003 (ICCVW 2025); official code
shiwonkim/Joint_FSCIL (read at dc98067). Plain joint training on all data seen so far is no
upper bound in FSCIL: the 5-shot classes drown among the base classes' hundreds of images. The
benchmark's ``run_oracle.sh`` scripts (``scripts/{cifar100,mini_imagenet,cub200}``) train with
the three fixes they combine, :mod:`fscil_bench.toolkit.imbalance`: Balanced Softmax, CMO's
minority CutMix and IMB-SAM, the novel classes seen so far being the tail.

An oracle like ``joint``: it keeps every training image it is handed (declared in ``memory()``)
and is marked ``oracle`` in every report. Recipe (``models/joint.py:67-325``):

* Session 0: plain cross-entropy (no Balanced Softmax, CMO or SAM, ``joint.py:93-96``) on 90% of
  every base class, keeping the epoch with the best accuracy on the other 10% (test view).
* Session ``s >= 1``: the network restarts from the same initial weights and trains for
  ``session.epochs`` epochs on the whole base set plus every shot so far, with Balanced Softmax
  (class counts of that union), IMB-SAM (rho 0.05, tail loss weighted 2) and, in the epochs
  strictly between ``cmo_start_epoch`` and ``epochs - cmo_end_epochs``, CMO with probability
  ``cmo_prob`` per batch (Beta(1, 1)); the last epoch is kept. A bias-free linear classifier over
  every class of the benchmark, its logits cut to the seen classes (``networks.py:900-943``).

Presets. ``paper`` per family (``run_oracle.sh``): SGD momentum 0.9, Nesterov, weight decay 5e-4,
cosine; CIFAR ResNet-20 widened to 32-64-128 channels, batch 128, lr 0.1 (the script sweeps 100,
200, 400 and 500 epochs: we take 500), CMO p 0.2; mini ResNet-18, 500 epochs, batch 128, lr 0.1,
CMO p 0.2; CUB ImageNet-pretrained ResNet-18, 700 epochs, batch 256, lr 0.001, CMO p 0.1. Our
choices: Balanced Softmax counts each class's own images (the code gives every base class
``floor(base images / base classes)``), the cosine schedule moves every step, a last partial batch
is dropped, the views are CEC's (the same pipelines: pad-crop/resized crop and flip).

``quick`` keeps the three fixes, the per-session restart and the schedule's shape but trains only
the classifier: the backbone is the shared quick base model (whose cross-entropy training is session
0), frozen; the union is the seeded pool of 100 base images per class that ``joint`` uses plus every
shot, an epoch draws each once (a shot as one of its 33 views: the test view and 32 training
augmentations, features computed once), Balanced Softmax counts those images (100 per base class,
5 per novel class), and CMO batches are cut and pasted as images and passed through the frozen
backbone. 8 epochs, batch 128, lr 0.1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.field import IMAGENET_RESNET18
from fscil_bench.toolkit.exemplars import ImageBank, labelled_images, subsample_per_class
from fscil_bench.toolkit.features import FrozenFeatureMemo, base_feature_pool, feature_views
from fscil_bench.toolkit.imbalance import (
    MixedTargets,
    balanced_softmax_loss,
    imbalanced_sam_step,
    log_prior,
    minority_draw,
    paste_minority,
)
from fscil_bench.toolkit.training import SGDRecipe, sgd


@dataclass(frozen=True)
class JointBalancedHparams:
    """``base``: session 0 (plain cross-entropy); ``session``: every later session.
    ``train_backbone=False`` trains only the classifier on the frozen shared base model
    (``feature_pool_per_class`` base images per class, ``augmented_views`` per shot)."""

    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    session: SGDRecipe = field(default_factory=lambda: SGDRecipe(epochs=8, lr=0.1, batch_size=128, nesterov=True))
    train_backbone: bool = False
    pretrained: str | None = None
    frozen_stages: int = -1
    train_view: str | None = None
    test_view: str | None = None
    validation_fraction: float = 0.1
    feature_pool_per_class: int | None = 100
    augmented_views: int = 32
    cmo_prob: float = 0.2
    cmo_start_epoch: int = 3
    cmo_end_epochs: int = 0
    cmo_beta: float = 1.0
    sam_rho: float = 0.05


def _paper(backbone: str, epochs: int, batch: int, lr: float, cmo_prob: float, views: str,
           pretrained: str | None = None) -> JointBalancedHparams:
    recipe = SGDRecipe(epochs=epochs, lr=lr, batch_size=batch, nesterov=True, schedule="cosine")
    return JointBalancedHparams(backbone=backbone, base=recipe, session=recipe, train_backbone=True,
                                pretrained=pretrained, train_view=f"cec-{views}-train", test_view=f"cec-{views}-test",
                                cmo_prob=cmo_prob)


_CIFAR = _paper("resnet20-wide", 500, 128, 0.1, 0.2, "cifar")


class JointBalanced(MethodBase):
    name = "joint-balanced"
    oracle = True
    paper = ("Kim et al., Does Prior Data Matter? Exploring Joint Training in the Context of Few-Shot "
             "Class-Incremental Learning, arXiv 2503.10003 (CMO + Balanced Softmax + IMB-SAM)")
    presets = {
        "quick": JointBalancedHparams(),
        "smoke": JointBalancedHparams(base=SMOKE_BASE_SGD, session=SGDRecipe(epochs=5, lr=0.1, batch_size=16),
                                      feature_pool_per_class=8, augmented_views=2, cmo_prob=0.5),
        "paper": {
            "cifar100": _CIFAR,
            "mini_imagenet": _paper("resnet18", 500, 128, 0.1, 0.2, "mini"),
            "cub200": _paper("resnet18", 700, 256, 0.001, 0.1, "cub", pretrained=IMAGENET_RESNET18),
            "default": _CIFAR,
        },
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: JointBalancedHparams = ctx.hparams
        return [] if hp.train_backbone else [cross_entropy_recipe_for(ctx, hp.backbone, hp.base)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: JointBalancedHparams = ctx.hparams
        self.num_base, self.num_seen = session.num_seen, session.num_seen
        self.train_backbone = hp.train_backbone
        self.bank = ImageBank()
        self.generator = torch.Generator().manual_seed(ctx.stage_seed("joint-balanced-sampling"))
        self.mixing_seed = ctx.stage_seed("joint-balanced-mixing")  # CMO draws: one numpy stream per session
        if hp.train_backbone:
            init = backbone_init(ctx, hp.backbone, hp.pretrained, hp.frozen_stages)
            torch.manual_seed(ctx.stage_seed("joint-balanced-init"))
            backbone = init.build()
            self.model = nn.Sequential(backbone, nn.Linear(backbone.out_dim, ctx.num_classes_total, bias=False))
            self.model.to(ctx.device)
            self.initial = copy.deepcopy(self.model)  # every session starts from these weights
            self.bank.add(session.train)
            self._fit_session0(session, ctx, hp)
            return
        base = cross_entropy_base_model(session, ctx, hp.backbone, hp.base)
        self.backbone, self.head = base.backbone, base.head
        self.backbone.requires_grad_(False)
        self.test_features = FrozenFeatureMemo(self.backbone)  # the backbone stays frozen
        pool, self.pool_features, _ = base_feature_pool(ctx, session.train, self.backbone,
                                                        ctx.extra["base_model"]["key"], hp.feature_pool_per_class)
        self.bank.add(pool)
        self.views_per_shot = 1 + hp.augmented_views  # shot i's views are rows i * views_per_shot onwards
        self.shot_views = torch.zeros(0, self.backbone.out_dim, device=ctx.device)
        torch.manual_seed(ctx.stage_seed("joint-balanced-head"))
        self.initial = nn.Linear(self.backbone.out_dim, ctx.num_classes_total, bias=False)

    def _fit_session0(self, session: Session, ctx: Context, hp: JointBalancedHparams) -> None:
        """Plain cross-entropy on 90% of each base class; the epoch best on the other 10% is kept."""
        labels = session.train.labels
        per_class = int(torch.bincount(labels).min())
        held = subsample_per_class(labels, max(1, round(hp.validation_fraction * per_class)), self.generator)
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held] = False
        train = labelled_images(session.train.raw_images[keep], labels[keep], session.train)
        valid = labelled_images(session.train.raw_images[held], labels[held], session.train)
        best, best_state = -1.0, None
        for _ in self._epochs(train, labels[keep], hp.base, ctx, "joint-balanced session 0", balanced=False):
            correct = sum(int((self.model(x).argmax(1) == y).sum()) for x, y in valid.batches(256, augment=False,
                                                                                            device=ctx.device))
            if correct / len(valid) > best:
                best, best_state = correct / len(valid), copy.deepcopy(self.model.state_dict())
        self.model.load_state_dict(best_state)
        self.model.eval()
        ctx.extra["joint_balanced"] = {"session0_validation_accuracy": round(best, 4)}

    def fit_session(self, session: Session, ctx: Context) -> None:
        hp: JointBalancedHparams = ctx.hparams
        self.bank.add(session.train)
        self.num_seen = session.num_seen
        union_labels = self.bank.labels.to(ctx.device)
        if hp.train_backbone:
            self.model.load_state_dict(self.initial.state_dict())
        else:
            views = feature_views(self.backbone, session.train, ctx, hp.augmented_views, self.generator)
            self.shot_views = torch.cat([self.shot_views, views.flatten(0, 1)])
            self.head = copy.deepcopy(self.initial).to(ctx.device)
        for _ in self._epochs(self.bank.as_labelled(), union_labels, hp.session, ctx,
                              f"joint-balanced session {session.index}", balanced=True):
            pass

    def _epochs(self, data, labels: torch.Tensor, recipe: SGDRecipe, ctx: Context, desc: str, balanced: bool):
        """Train for ``recipe.epochs`` epochs over ``data`` (yielding after each): plain
        cross-entropy, or Balanced Softmax + CMO + IMB-SAM with ``balanced``."""
        hp: JointBalancedHparams = ctx.hparams
        module = self.model if hp.train_backbone else self.head
        params = [p for p in module.parameters() if p.requires_grad]
        n, batch = len(labels), recipe.batch_size
        steps_per_epoch = n // batch if n > batch else 1  # a last partial batch is dropped
        optimizer = sgd(params, recipe)
        prior = log_prior(torch.bincount(labels, minlength=self.num_seen))
        tail = torch.arange(self.num_base, self.num_seen, device=ctx.device)  # the novel classes seen so far
        step = 0
        rng = np.random.default_rng([self.mixing_seed, self.num_seen])
        for epoch in ctx.progress(range(recipe.epochs), desc=desc, total=recipe.epochs):
            module.train()
            if not hp.train_backbone:
                self.backbone.eval()
            cmo_epoch = balanced and hp.cmo_start_epoch < epoch < recipe.epochs - hp.cmo_end_epochs
            order = torch.randperm(n, generator=self.generator)
            for b in range(steps_per_epoch):
                idx = order[b * batch:(b + 1) * batch] if n > batch else order
                mix = cmo_epoch and rng.random() < hp.cmo_prob
                forward, targets = self._batch(data, idx, mix, rng, ctx)
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr_at(step, steps_per_epoch)
                step += 1
                if balanced:
                    def per_sample_losses() -> torch.Tensor:
                        logits = forward()
                        return targets.loss(lambda y: balanced_softmax_loss(logits, y, prior))

                    imbalanced_sam_step(params, optimizer, per_sample_losses, targets.involves(tail), hp.sam_rho)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    nn.functional.cross_entropy(forward(), targets.labels).backward()
                    optimizer.step()
            module.eval()
            yield epoch

    def _batch(self, data, idx: torch.Tensor, mix: bool, rng: np.random.Generator, ctx: Context):
        """A batch of the union as (a function computing its logits over the seen classes, its targets)."""
        hp: JointBalancedHparams = ctx.hparams
        labels = data.labels[idx].to(ctx.device)
        if mix or hp.train_backbone:
            images = data.train_transform(data.raw_images[idx].to(ctx.device), self.generator)
            targets = MixedTargets(labels)
            if mix:
                partner = minority_draw(data.labels, len(idx), self.generator)
                partners = data.train_transform(data.raw_images[partner].to(ctx.device), self.generator)
                images, targets = paste_minority(images, labels, partners, data.labels[partner].to(ctx.device),
                                                 hp.cmo_beta, rng, self.generator)
            if hp.train_backbone:
                return lambda: self.model(images)[:, :self.num_seen], targets
            with torch.no_grad():
                features = self.backbone(images)
        else:
            targets = MixedTargets(labels)
            features = self._features(idx.to(ctx.device))
        return lambda: self.head(features)[:, :self.num_seen], targets

    def _features(self, idx: torch.Tensor) -> torch.Tensor:
        """Kept features of union samples: a base sample's one view, a shot's view drawn at random."""
        n_pool = len(self.pool_features)
        is_shot = idx >= n_pool
        out = self.pool_features[idx.clamp(max=n_pool - 1)].clone()
        shots = idx[is_shot] - n_pool
        pick = torch.randint(self.views_per_shot, (len(shots),), generator=self.generator).to(idx.device)
        out[is_shot] = self.shot_views[shots * self.views_per_shot + pick]
        return out

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if self.train_backbone:
            self.model.eval()
            return self.model[0](images)
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self._head()(features)[:, :self.num_seen]

    def classifier_weights(self) -> torch.Tensor:
        return self._head().weight.detach()[:self.num_seen]

    def _head(self) -> nn.Linear:
        return self.model[1] if self.train_backbone else self.head

    def memory(self) -> MemoryDeclaration:
        features = 0 if self.train_backbone else len(self.pool_features) + len(self.shot_views)
        dim = self._head().in_features
        kept = "every training image" if self.train_backbone else "a pool of base images per class and every shot"
        return MemoryDeclaration(
            exemplars=len(self.bank), feature_vectors=features, bytes=self.bank.nbytes + features * dim * 4,
            notes=f"oracle: {kept} (all past training data it uses)" + (f"; {features} features of them" if features else ""))
