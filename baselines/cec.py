"""CEC: Continually Evolved Classifiers.

Zhang, Song, Lin, Li and Chen, "Few-Shot Incremental Learning with Continually Evolved
Classifiers", CVPR 2021; official code icoz69/CEC-CVPR2021 (read at 3a5d335). Three stages:

1. **Decoupled base.** A backbone is trained with cross-entropy on the base classes (CEC's own
   base is a cosine classifier at temperature 16,
   :func:`~fscil_bench.toolkit.base_models.cross_entropy_base_model`, the same model as
   ``prototype``'s).
   Every class is then represented by a prototype, the mean feature of its training images
   under the test view: all base images for a base class, the few shots for a novel class.
2. **Graph-attention adaptation** (:class:`~fscil_bench.toolkit.set_attention.PrototypeAttentionHead`):
   for every query the set [prototypes; query] goes through one self-attention block
   (residual, LayerNorm, dropout), and the logits are ``16 * cos`` of the adapted query and
   adapted prototypes (``models/cec/Network.py:25-116``).
3. **Pseudo-incremental meta-training** of the block (and, at a small learning rate, the
   backbone) on episodes of the base classes (``models/cec/fscil_trainer.py:121-138, 296-361``):
   ``ways`` base classes with ``shots`` support and ``queries`` query images each, drawn with
   learn2learn's task sampling (:mod:`fscil_bench.integrations.learn2learn_tasks`); each class
   also gives a rotation-synthesised pseudo class, its support and queries turned by one angle
   drawn from {90, 180, 270} degrees, so an episode has ``2 * ways`` classes (15 + 15). The loss
   is the cross-entropy of the queries over the episode's prototypes. SGD (momentum 0.9,
   Nesterov, weight decay 5e-4) with the backbone at ``encoder_lr`` and the block at
   ``attention_lr``, both halved every 20 epochs of 50 episodes (``fscil_trainer.py:140-152``).
   As in the official code the whole model stays in evaluation mode while it meta-trains
   (``fscil_trainer.py:175``): BatchNorm statistics frozen, both dropouts off
   (``dropout_in_meta_training`` turns the block's dropout on). The incremental sessions train
   nothing: the novel prototypes join the set.

Two official quirks are not reproduced: the meta-training epoch is chosen by the last session's
test accuracy (``fscil_trainer.py:280-294``; the protocol gives a method no test data), so the last
epoch is kept; and the official episodes lose their augmentation after the first epoch because
the base set's transform is swapped for the test one (``models/cec/helper.py:12-14``), which
``augmented_epochs=1`` reproduces (episodes of later epochs use the test view).

Presets. ``paper`` per family (``README.md:49-70``): CEC's cosine base (SGD Nesterov, lr 0.1,
batch 128, 100 epochs, x0.1 at epochs 60/70 on CIFAR, 40/70 on mini, 30/40/60/80 on CUB; ResNet-20,
ResNet-18, ImageNet-pretrained ResNet-18) with CEC's views; meta-training 100 epochs x 50
episodes of 15-way 1-shot with 15 queries (10 on CUB), encoder lr 0.002 (CIFAR) or 0.0002 (mini,
CUB), attention lr 0.0002. The base is :data:`fscil_bench.toolkit.field.FIELD`'s, the same cache
entry as ``prototype``'s ``paper`` preset. Our choices: the base keeps its last epoch (CEC keeps the
best base-class test accuracy), and normalises one batch of 128 where CEC's 4-GPU
``DataParallel`` normalised shards of 32. ``quick`` starts from the shared quick base model
(convnet4-small, linear cross-entropy head) and keeps the block, its learning rate, the 15-way
1-shot episodes and the rotations, but freezes the backbone (``encoder_lr=0``), so episodes come
from a pool of 100 base images per class whose features under the four rotations are computed
once and cached, and runs 1,000 of the 5,000 episodes (20 epochs of 50, halving the rate every 4
epochs instead of every 20: the same five levels).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.features import (
    FrozenFeatureMemo,
    base_feature_pool,
    cached_features,
    class_means,
    extract_features,
)
from fscil_bench.toolkit.field import FIELD, FieldSetup
from fscil_bench.toolkit.set_attention import PrototypeAttentionHead
from fscil_bench.toolkit.training import OptimisationLoop, SGDRecipe


@dataclass(frozen=True)
class CECHparams:
    """``base_classifier``: "linear" (the shared base model) or "cosine" (CEC's, at ``scale``).
    ``encoder_lr=0`` freezes the backbone and meta-trains on cached features of a pool of
    ``episode_pool_per_class`` base images per class (None: all). ``augmented_epochs``: the first
    epochs whose episodes use the training augmentation (only when the backbone trains)."""

    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    base_classifier: str = "linear"
    pretrained: str | None = None
    frozen_stages: int = -1
    train_view: str | None = None
    test_view: str | None = None
    scale: float = 16.0
    epochs: int = 100
    episodes_per_epoch: int = 50
    ways: int = 15
    shots: int = 1
    queries: int = 15
    encoder_lr: float = 0.0
    attention_lr: float = 2e-4
    lr_step_epochs: int = 20
    lr_gamma: float = 0.5
    augmented_epochs: int = 1
    episode_pool_per_class: int | None = 100
    dropout_in_meta_training: bool = False


def _paper(setup: FieldSetup, encoder_lr: float, queries: int = 15) -> CECHparams:
    return CECHparams(backbone=setup.backbone, base=setup.base, base_classifier="cosine", pretrained=setup.pretrained,
                      train_view=setup.train_view, test_view=setup.test_view, encoder_lr=encoder_lr, queries=queries,
                      episode_pool_per_class=None)


_CIFAR = _paper(FIELD["cifar100"], encoder_lr=0.002)


class CEC(MethodBase):
    name = "cec"
    paper = "Zhang et al., Few-Shot Incremental Learning with Continually Evolved Classifiers, CVPR 2021"
    presets = {
        "quick": CECHparams(epochs=20, lr_step_epochs=4),
        "smoke": CECHparams(base=SMOKE_BASE_SGD, epochs=2, episodes_per_epoch=3, episode_pool_per_class=None),
        "paper": {
            "cifar100": _CIFAR,
            "mini_imagenet": _paper(FIELD["mini_imagenet"], encoder_lr=0.0002),
            "cub200": _paper(FIELD["cub200"], encoder_lr=0.0002, queries=10),
            "default": _CIFAR,
        },
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: CECHparams = ctx.hparams
        return [cross_entropy_recipe_for(ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages,
                                         hp.base_classifier, hp.scale)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        from fscil_bench.integrations.learn2learn_tasks import EpisodeSampler  # before any training: needs learn2learn

        hp: CECHparams = ctx.hparams
        base = cross_entropy_base_model(session, ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages,
                                        classifier=hp.base_classifier, scale=hp.scale)
        key = ctx.extra["base_model"]["key"]
        torch.manual_seed(ctx.stage_seed("cec-attention-init"))
        self.head = PrototypeAttentionHead(base.backbone.out_dim, hp.scale).to(ctx.device)
        if hp.encoder_lr > 0:
            self.backbone = copy.deepcopy(base.backbone)
            losses = self._meta_train(EpisodeSampler, session.train, None, ctx, hp)
            feats, labels = extract_features(self.backbone, session.train, ctx)
        else:
            self.backbone = base.backbone
            pool, pool_feats, _ = base_feature_pool(ctx, session.train, self.backbone, key, hp.episode_pool_per_class)
            turned = [pool_feats] + [cached_features(ctx, _Turned(self.backbone, k), key, pool, tag=f"eval-rot{90 * k}")[0]
                                     for k in (1, 2, 3)]
            losses = self._meta_train(EpisodeSampler, pool, torch.stack(turned), ctx, hp)
            _, feats, labels = base_feature_pool(ctx, session.train, self.backbone, key, None)
        self.backbone.requires_grad_(False)
        self.head.eval()
        ctx.extra["cec"] = {"episodes": hp.epochs * hp.episodes_per_epoch, "first_epoch_loss": losses[0],
                            "last_epoch_loss": losses[-1]}
        self.test_features = FrozenFeatureMemo(self.backbone)  # the backbone never changes again
        self.prototypes = class_means(feats, labels, session.new_classes)

    def _meta_train(self, sampler_cls: type, pool: LabelledImages, table: torch.Tensor | None, ctx: Context,
                    hp: CECHparams) -> list[float]:
        """Meta-train on episodes of ``pool`` drawn by ``sampler_cls`` (the learn2learn adapter's
        :class:`EpisodeSampler`): from its cached features ``table`` (rotation, sample, d) when
        given, else through the backbone; return the mean loss of every epoch."""
        labels = pool.labels
        fewest = int(torch.bincount(labels).min())  # small base sets (tests) get smaller episodes
        ways = min(hp.ways, len(torch.unique(labels)))
        shots = min(hp.shots, fewest - 1)
        queries = min(hp.queries, fewest - shots)
        sampler = sampler_cls(labels, ways, shots, queries, seed=ctx.stage_seed("cec-episodes"))
        generator = torch.Generator().manual_seed(ctx.stage_seed("cec-rotations"))
        groups = [{"params": list(self.head.parameters()), "lr": hp.attention_lr}]
        if table is None:
            groups.append({"params": list(self.backbone.parameters()), "lr": hp.encoder_lr})
        optimizer = torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.lr_step_epochs, gamma=hp.lr_gamma)
        loop = OptimisationLoop(optimizer, None, ctx.device)
        self.backbone.eval()  # CEC meta-trains in evaluation mode: BatchNorm statistics stay fixed
        self.head.train(hp.dropout_in_meta_training)
        targets = torch.arange(2 * ways, device=ctx.device).repeat_interleave(queries)
        losses = []
        for epoch in ctx.progress(range(hp.epochs), desc="CEC pseudo-incremental episodes", total=hp.epochs):
            augment = table is None and epoch < hp.augmented_epochs
            for _ in range(hp.episodes_per_epoch):
                episode = sampler.sample()
                turns = 1 + torch.randint(3, (ways,), generator=generator)  # 90, 180 or 270 degrees per class
                support, query = episode.support.flatten(), episode.query.flatten()
                index = torch.cat([support, support, query, query])
                quarter_turns = torch.cat([torch.zeros_like(support), turns.repeat_interleave(shots),
                                           torch.zeros_like(query), turns.repeat_interleave(queries)])
                if table is not None:
                    feats = table[quarter_turns.to(table.device), index.to(table.device)]
                else:
                    feats = self._encode_turned(pool, index, quarter_turns, augment, generator, ctx)
                n_support = ways * shots
                prototypes = feats[: 2 * n_support].view(2 * ways, shots, -1).mean(1)
                logits = self.head(prototypes, feats[2 * n_support:])
                loop.step(F.cross_entropy(logits, targets), len(targets))
            schedule.step()
            losses.append(loop.end_epoch())
        return losses

    def _encode_turned(self, pool: LabelledImages, index: torch.Tensor, quarter_turns: torch.Tensor, augment: bool,
                       generator: torch.Generator, ctx: Context) -> torch.Tensor:
        """Backbone features of ``pool[index]``, each turned by its ``quarter_turns`` x 90 degrees."""
        raw = pool.raw_images[index].to(ctx.device)
        images = pool.train_transform(raw, generator) if augment else pool.eval_transform(raw, None)
        images = torch.stack([torch.rot90(x, int(k), (1, 2)) for x, k in zip(images, quarter_turns)])
        return self.backbone(images)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = extract_features(self.backbone, session.train, ctx)
        self.prototypes = torch.cat([self.prototypes, class_means(feats, labels, session.new_classes)])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.prototypes, features)

    def classifier_weights(self) -> torch.Tensor:
        """The prototypes before adaptation (the adapted ones depend on the query)."""
        return self.prototypes

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        return MemoryDeclaration(feature_vectors=n, bytes=n * d * 4, notes="one mean feature (prototype) per seen class")


class _Turned(torch.nn.Module):
    """``network`` applied to its input turned by ``k`` x 90 degrees (the cached pool features)."""

    def __init__(self, network: torch.nn.Module, k: int):
        super().__init__()
        self.network, self.k = network, k

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(torch.rot90(images, self.k, (2, 3)))
