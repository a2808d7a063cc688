"""iCaRL: incremental classifier and representation learning.

Rebuffi, Kolesnikov, Sperl and Lampert, "iCaRL: Incremental Classifier and Representation
Learning", CVPR 2017. Three parts, as in the paper:

* **Exemplar memory chosen by herding.** For every class, up to ``memory_per_class`` training
  images (20 by default; a novel class with 5 shots keeps all 5) are picked greedily so the mean
  of their L2-normalised features stays as close as possible to the class mean
  (:func:`herding_selection`, the paper's Algorithm 4). The budget is per class, so sets are never
  reduced; the images are declared in ``memory()``.
* **Representation learning with distillation.** In each incremental session the network is
  trained on the session's samples plus the exemplars (all of them in ``paper``; ``quick`` draws
  ``replay_samples`` of them at random, to bound the CPU cost). With ``distillation="bce"`` (the
  paper) every output is a sigmoid trained with binary cross-entropy: new classes get one-hot targets,
  old classes get the previous network's sigmoid outputs as targets; the loss is averaged over
  samples and classes. ``distillation="kd"`` instead uses softmax cross-entropy on all classes
  plus ``T^2``-scaled KL distillation of the old network's softened old-class logits.
* **Nearest-mean-of-exemplars classification.** A test image gets, for every seen class, the
  cosine similarity of its L2-normalised feature to the class's mean exemplar feature
  (equivalent in ranking to the paper's Euclidean distance between unit vectors). Means are
  recomputed with the current network after every session (optionally averaging each exemplar
  with its mirror image, as the original implementation does).

Base session. ``quick`` starts from the shared cross-entropy base model
(:func:`cross_entropy_base_model`, shared with finetune and prototype) and herds base exemplars
from a seeded pool of ``herding_pool`` images per class (the features of that pool are cached and
shared). ``paper`` trains the base session with iCaRL's own sigmoid loss (``base_loss="bce"``, the
paper's CIFAR-100 schedule: 70 epochs, lr 2.0 divided by 5 at epochs 49 and 63, weight decay
1e-5) and herds from all base images.

``paper``: iCaRL's optimiser is the one its paper gives for CIFAR-100 (Rebuffi et al., CVPR 2017,
section 4: 70 epochs, lr 2.0 divided by 5 after epochs 49 and 63, weight decay 1e-5, batch 128),
used for the base session and each incremental session; the backbone, pretraining and views are
the field's per family (:mod:`fscil_bench.toolkit.field`: ResNet-20 on CIFAR, ResNet-18 on mini,
the ImageNet-pretrained ResNet-18 on CUB, CEC's views), on which TOPIC's and CEC's tables run
iCaRL. The FSCIL papers publish no iCaRL recipe of their own: the memory of 20 exemplars per class
(iCaRL's 2,000 over CIFAR-100's 100 classes) and the rest are our choice.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.models.inference import inference_network
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    SMOKE_SESSION_SGD,
    cached_model,
    cross_entropy_base_model,
    cross_entropy_recipe,
)
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.exemplars import ImageBank, labelled_images
from fscil_bench.toolkit.features import base_feature_pool, extract_features
from fscil_bench.toolkit.field import field_presets
from fscil_bench.toolkit.heads import BackboneWithHead, grow_linear
from fscil_bench.toolkit.training import SGDRecipe, recipe_key, train_supervised


def herding_selection(features: torch.Tensor, m: int, normalize: bool = True) -> torch.Tensor:
    """Indices (in pick order) of ``min(m, n)`` of the ``n`` rows of ``features`` chosen by herding.

    With ``phi`` the (L2-normalised) features and ``mu`` their mean, the k-th pick is the unused
    sample ``x`` minimising ``|| mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||``. The first pick is
    therefore the sample closest to the mean.
    """
    f = F.normalize(features.float(), dim=1) if normalize else features.float()
    mu = f.mean(0)
    running = torch.zeros_like(mu)
    free = torch.ones(len(f), dtype=torch.bool, device=f.device)
    picks: list[int] = []
    for k in range(1, min(m, len(f)) + 1):
        dist = (mu - (running + f) / k).norm(dim=1)
        dist[~free] = float("inf")
        i = int(dist.argmin())
        picks.append(i)
        free[i] = False
        running += f[i]
    return torch.tensor(picks, dtype=torch.long)


@dataclass(frozen=True)
class ICaRLHparams:
    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    base_loss: str = "cross-entropy"  # "cross-entropy" (the shared cached model) or "bce" (iCaRL's sigmoid loss)
    memory_per_class: int = 20
    herding_pool: int | None = 100  # base images per class herding chooses from (None: all)
    session: SGDRecipe = field(default_factory=lambda: SGDRecipe(epochs=1, lr=0.01, batch_size=64, schedule="constant"))
    replay_samples: int | None = 256  # exemplars drawn (uniformly) into each session's training set (None: all)
    distillation: str = "bce"  # "bce" (the paper) or "kd"
    temperature: float = 2.0  # for "kd"
    flip_means: bool = False  # average each exemplar's feature with its mirror image's
    pretrained: str | None = None  # the backbone's initial weights (a known name or a path)
    frozen_stages: int = -1
    train_view: str | None = None  # the method's own views (None: the benchmark's)
    test_view: str | None = None


_PAPER_SGD = SGDRecipe(epochs=70, lr=2.0, batch_size=128, weight_decay=1e-5, schedule="step", milestones=(49, 63), gamma=0.2)


class ICaRL(MethodBase):
    name = "icarl"
    paper = "Rebuffi et al., iCaRL: Incremental Classifier and Representation Learning, CVPR 2017"
    presets = {
        "quick": ICaRLHparams(),
        "smoke": ICaRLHparams(base=SMOKE_BASE_SGD, memory_per_class=5, herding_pool=8, session=SMOKE_SESSION_SGD),
        "paper": field_presets(lambda f: ICaRLHparams(
            backbone=f.backbone, pretrained=f.pretrained, train_view=f.train_view, test_view=f.test_view,
            base=_PAPER_SGD, base_loss="bce", herding_pool=None, session=_PAPER_SGD, replay_samples=None,
            flip_means=True)),
    }

    # --- base session -------------------------------------------------------------------------

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: ICaRLHparams = ctx.hparams
        init = backbone_init(ctx, hp.backbone, hp.pretrained, hp.frozen_stages).identity
        if hp.base_loss == "cross-entropy":
            return [cross_entropy_recipe(hp.backbone, hp.base, ctx.benchmark.num_base_classes, init)]
        if hp.base_loss == "bce":
            return [self._bce_recipe(hp, ctx.benchmark.num_base_classes, init)]
        raise ValueError(f"unknown base_loss {hp.base_loss!r} (choose cross-entropy or bce)")

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: ICaRLHparams = ctx.hparams
        if hp.base_loss == "cross-entropy":
            base = cross_entropy_base_model(session, ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages)
        elif hp.base_loss == "bce":
            base = self._bce_base_model(session, ctx, hp)
        else:
            raise ValueError(f"unknown base_loss {hp.base_loss!r} (choose cross-entropy or bce)")
        base_key = ctx.extra["base_model"]["key"]
        self.memory_per_class = hp.memory_per_class
        # Copy: the cached base model may be shared with other methods in this process.
        self.model = copy.deepcopy(base)
        self.bank = ImageBank()
        pool_size = None if hp.herding_pool is None else max(hp.herding_pool, hp.memory_per_class)
        pool, feats, labels = base_feature_pool(ctx, session.train, self.model.backbone, base_key, pool_size)
        self._herd(pool, feats, labels, session.new_classes, hp.memory_per_class)
        self._update_means(ctx, hp)

    @staticmethod
    def _bce_recipe(hp: ICaRLHparams, classes: int, init: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "icarl-bce", "backbone": hp.backbone, "sgd": recipe_key(hp.base), "classes": classes, **init}

    @classmethod
    def _bce_base_model(cls, session: Session, ctx: Context, hp: ICaRLHparams) -> nn.Module:
        init = backbone_init(ctx, hp.backbone, hp.pretrained, hp.frozen_stages)
        recipe = cls._bce_recipe(hp, session.num_seen, init.identity)
        generator = torch.Generator().manual_seed(ctx.stage_seed("icarl-base-data"))

        def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits, F.one_hot(y, logits.shape[1]).float())

        def train(model: nn.Module) -> None:
            train_supervised(model, session.train, loss, hp.base, ctx, desc="icarl base session", generator=generator,
                             predict=model)

        return cached_model(ctx, recipe, lambda: BackboneWithHead(init.build(), session.num_seen), train,
                            data=session.train)

    # --- incremental sessions -----------------------------------------------------------------

    def fit_session(self, session: Session, ctx: Context) -> None:
        hp: ICaRLHparams = ctx.hparams
        teacher = copy.deepcopy(self.model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        num_old = self.model.head.out_features
        self.model.head = grow_linear(self.model.head, session.num_seen)

        generator = torch.Generator().manual_seed(ctx.stage_seed("icarl-session", session.index))
        replay = torch.arange(len(self.bank))
        if hp.replay_samples is not None and hp.replay_samples < len(replay):
            replay = torch.randperm(len(replay), generator=generator)[: hp.replay_samples].sort().values
        train = labelled_images(torch.cat([self.bank.images[replay], session.train.raw_images]),
                                torch.cat([self.bank.labels[replay], session.train.labels]), session.train)

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                old = teacher(x)
            return self.model(x), old

        def loss(out: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
            logits, old = out
            if hp.distillation == "bce":
                target = F.one_hot(y, logits.shape[1]).float()
                target[:, :num_old] = torch.sigmoid(old)
                return F.binary_cross_entropy_with_logits(logits, target)
            if hp.distillation == "kd":
                t = hp.temperature
                kd = F.kl_div(F.log_softmax(logits[:, :num_old] / t, dim=1), F.softmax(old / t, dim=1), reduction="batchmean")
                return F.cross_entropy(logits, y) + t * t * kd
            raise ValueError(f"unknown distillation {hp.distillation!r} (choose bce or kd)")

        train_supervised(self.model, train, loss, hp.session, ctx, desc=f"icarl session {session.index}",
                         forward=forward, generator=generator)
        feats, labels = extract_features(self.model.backbone, session.train, ctx)
        self._herd(session.train, feats, labels, session.new_classes, hp.memory_per_class)
        self._update_means(ctx, hp)

    # --- exemplars and class means ------------------------------------------------------------

    def _herd(self, data: LabelledImages, feats: torch.Tensor, labels: torch.Tensor, classes, m: int) -> None:
        for c in classes:
            idx = torch.nonzero(labels.cpu() == c).flatten()
            chosen = idx[herding_selection(feats[idx.to(feats.device)].cpu(), m)]
            self.bank.add(data, chosen)

    @torch.no_grad()
    def _update_means(self, ctx: Context, hp: ICaRLHparams) -> None:
        self.model.eval()
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        for x, y in self.bank.as_labelled().batches(256, augment=False, device=ctx.device):
            f = F.normalize(self.model.backbone(x), dim=1)
            if hp.flip_means:
                f = F.normalize(f + F.normalize(self.model.backbone(x.flip(3)), dim=1), dim=1)
            for c in torch.unique(y).tolist():
                mask = y == c
                sums[c] = sums.get(c, 0) + f[mask].sum(0)
                counts[c] = counts.get(c, 0) + int(mask.sum())
        self.means = F.normalize(torch.stack([sums[c] / counts[c] for c in sorted(sums)]), dim=1)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised backbone features (the space of the class means)."""
        self.model.eval()
        return F.normalize(inference_network(self.model.backbone)(images), dim=1)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.means.T

    def classifier_weights(self) -> torch.Tensor:
        """The normalised mean-of-exemplars feature of every seen class."""
        return self.means

    def memory(self) -> MemoryDeclaration:
        n, d = self.means.shape
        return MemoryDeclaration(
            exemplars=len(self.bank),
            feature_vectors=n,
            bytes=self.bank.nbytes + n * d * 4,
            notes=f"herding exemplars, at most {self.memory_per_class} per class; one mean-of-exemplars feature per class",
        )
