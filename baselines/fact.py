"""FACT: forward-compatible few-shot class-incremental learning with virtual prototypes.

Zhou, Wang, Ye, Ma, Pu and Zhan, "Forward Compatible Few-Shot Class-Incremental Learning",
CVPR 2022; official code zhoudw-zdw/CVPR22-Fact (read at 825933b). The base session reserves
room for the classes to come: a bias-free cosine classifier (temperature ``T`` = 16) holds a row
for every class of the benchmark, ``B`` real base rows and ``V = N - B`` virtual prototypes,
orthogonally initialised (``models/fact/Network.py:29-36``). Per batch
(``models/fact/helper.py:8-66``), with ``z = T cos(f(x), W)``:

* ``L1``: cross-entropy of the base logits ``z[:, :B]``.
* ``L2`` (from epoch ``loss_start_epoch``): with the true class masked (-1e9), the pseudo-label is
  the strongest virtual class among the 3 linked to the true class by a fixed random mask
  (unlinked virtual logits count as 0, so an all-negative row picks an unlinked one); ``L2`` is the
  cross-entropy of the masked logits over all ``N`` columns against it.
* Instance mixture: the feature maps after the backbone's middle stage
  (:func:`~fscil_bench.toolkit.backbone_split.split_backbone`; ResNet-20/ResNet-18: after layer2;
  convnet4-small: after its second max-pool) are mixed with a permutation of the batch, ``lambda ~
  Beta(alpha, alpha)`` drawn every batch, and finished through the rest of the network; pairs of the
  same class are dropped. ``L3`` is the cross-entropy of the mixture's logits against its strongest
  virtual class, ``L4`` the cross-entropy, with that virtual class masked, against its strongest
  base class.
* Loss ``L1 + balance * (L2 + L3 + L4)``; SGD momentum 0.9, Nesterov, weight decay 5e-4.

Which virtual rows are learned (``shared_virtual``). The official model makes its frozen L2 copy
of the virtual rows a view of the classifier's, but moving the model to the GPU copies each
parameter separately, so in the runs behind the paper ``L2`` scores against the frozen orthogonal
initialisation while ``L3``/``L4`` train the classifier's virtual rows, which inference uses
(``Network.py:33-55, 109-111``). ``shared_virtual=False`` (default) reproduces that;
``True`` scores ``L2`` against the trained rows too.

After base training the base rows become the base classes' mean features (test view) and the
virtual prototypes ``V^`` the L2-normalised trained virtual rows (``fscil_trainer.py:114-132``).
Incremental sessions train nothing: a novel class's prototype is the mean of its shots. Session 0
is scored by ``T cos`` to the prototypes; later sessions by the bimodal rule
(``fscil_trainer.py:167-195``, :func:`bimodal_scores`).

Presets. ``paper`` per family (``readme.md:51-61``; the argument dumps of ``imgs/*-FACT.txt``):
CIFAR ResNet-20, 600 epochs, batch 256, lr 0.1 cosine, balance 0.001, L2-L4 from epoch 0, alpha
0.5; mini ResNet-18, 1000 epochs, batch 128, lr 0.1 cosine, balance 0.01, from epoch 150, alpha
0.5; CUB ImageNet-pretrained ResNet-18, 400 epochs, batch 256, lr 0.005 x0.25 at epochs 50, 100,
..., 300, balance 0.01, from epoch 0, alpha 2. T 16, eta 0.1, 3 links per virtual class, top 40
everywhere. Our choices: the last epoch is kept (FACT keeps the best test accuracy and scores
session 0 by the better of its trained classifier and the prototypes); the cosine schedule moves
every step; one batch is normalised where FACT's 4-GPU ``DataParallel`` normalised quarters; the
unused extra forward pass that FACT makes per batch (it only moves BatchNorm's running averages)
is left out; and the training views are CEC's, because FACT's default AutoAugment (+ Cutout on
CIFAR; ``dataloader/*``, ``autoaug=1``) is not among the suite's views: expect lower base
accuracy than the paper. ``quick`` keeps the classifier, the four losses with CIFAR's balance and
alpha, and the inference, but starts the backbone from the shared quick base model (convnet4-small)
and trains FACT's base for one epoch (batch 128, lr 0.05 after a fifth of an epoch of warm-up,
cosine: our choices, sized for two CPU cores) instead of 600 from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.cache import stable_hash
from fscil_bench.toolkit.backbone_split import split_backbone
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    cached_model,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.features import FrozenFeatureMemo, class_means, extract_features
from fscil_bench.toolkit.field import FIELD, FieldSetup
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.training import SGDRecipe, recipe_key, train_supervised

FACT_BASE_VERSION = 2


def bimodal_scores(features: torch.Tensor, prototypes: torch.Tensor, virtual: torch.Tensor, temperature: float,
                   eta: float, top_k: int) -> torch.Tensor:
    """FACT's log scores ``(n, C)`` in an incremental session (``fscil_trainer.py:167-195``):
    ``P = virtual @ colnorm(prototypes^T)``, where ``colnorm`` scales each feature dimension to
    unit norm across the ``C`` classes (as the code does, not a cosine); ``s = cos(f, virtual)``
    with all but its ``top_k`` largest entries set to 0; score
    ``eta softmax(s P) + (1 - eta) softmax(temperature cos(f, prototypes))``. ``virtual`` holds
    unit rows."""
    projection = virtual @ F.normalize(prototypes.T, dim=1)
    similarity = F.normalize(features, dim=1) @ virtual.T
    top, index = similarity.topk(min(top_k, similarity.shape[1]), dim=1)
    kept = torch.zeros_like(similarity).scatter(1, index, top)
    mixed = eta * torch.softmax(kept @ projection, dim=1) \
        + (1 - eta) * torch.softmax(cosine_logits(features, prototypes, temperature), dim=1)
    return mixed.log()


@dataclass(frozen=True)
class FACTHparams:
    """``warm_start``: start the backbone from the shared cross-entropy base model of this recipe
    (None: from scratch or ``pretrained``). ``loss_start_epoch``: FACT's ``loss_iter``."""

    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = SGDRecipe(epochs=1, lr=0.05, batch_size=128, nesterov=True, warmup_epochs=0.2)
    warm_start: SGDRecipe | None = QUICK_BASE_SGD
    pretrained: str | None = None
    frozen_stages: int = -1
    train_view: str | None = None
    test_view: str | None = None
    temperature: float = 16.0
    balance: float = 0.001
    loss_start_epoch: int = 0
    alpha: float = 0.5
    eta: float = 0.1
    links_per_virtual: int = 3
    top_k: int = 40
    shared_virtual: bool = False


class FACTNetwork(nn.Module):
    """Backbone and a cosine classifier over every class (base rows, then virtual rows), plus the
    frozen copy of the initial virtual rows that ``L2`` scores against."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_base: int, temperature: float):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_dim, num_classes, bias=False)
        nn.init.orthogonal_(self.fc.weight)
        self.register_buffer("frozen_virtual", self.fc.weight.detach()[num_base:].clone())
        self.num_base, self.temperature = num_base, temperature


def _paper(setup: FieldSetup, base: SGDRecipe, balance: float, loss_start_epoch: int, alpha: float) -> FACTHparams:
    return FACTHparams(backbone=setup.backbone, base=base, warm_start=None, pretrained=setup.pretrained,
                       train_view=setup.train_view, test_view=setup.test_view, balance=balance,
                       loss_start_epoch=loss_start_epoch, alpha=alpha)


_CIFAR = _paper(FIELD["cifar100"], SGDRecipe(epochs=600, lr=0.1, batch_size=256, nesterov=True, schedule="cosine"),
                balance=0.001, loss_start_epoch=0, alpha=0.5)


class FACT(MethodBase):
    name = "fact"
    paper = "Zhou et al., Forward Compatible Few-Shot Class-Incremental Learning, CVPR 2022"
    presets = {
        "quick": FACTHparams(),
        "smoke": FACTHparams(base=SGDRecipe(epochs=2, lr=0.05, batch_size=16, nesterov=True), warm_start=None,
                             balance=0.1),
        "paper": {
            "cifar100": _CIFAR,
            "mini_imagenet": _paper(FIELD["mini_imagenet"], SGDRecipe(epochs=1000, lr=0.1, batch_size=128, nesterov=True,
                                                                      schedule="cosine"), 0.01, 150, 0.5),
            "cub200": _paper(FIELD["cub200"], SGDRecipe(epochs=400, lr=0.005, batch_size=256, nesterov=True,
                                                        schedule="step", milestones=(50, 100, 150, 200, 250, 300),
                                                        gamma=0.25), 0.01, 0, 2.0),
            "default": _CIFAR,
        },
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: FACTHparams = ctx.hparams
        warm = [] if hp.warm_start is None else [cross_entropy_recipe_for(ctx, hp.backbone, hp.warm_start)]
        return warm + [self._recipe(ctx, hp, warm[0] if warm else None)]

    @staticmethod
    def _recipe(ctx: Context, hp: FACTHparams, warm_recipe: dict[str, Any] | None) -> dict[str, Any]:
        """FACT's base model's cache recipe; the warm start is named by its own recipe (both
        models are keyed by the same benchmark, seed, views and data)."""
        init = backbone_init(ctx, hp.backbone, hp.pretrained, hp.frozen_stages)
        return {"kind": "fact", "version": FACT_BASE_VERSION, "backbone": hp.backbone, **init.identity,
                "warm_start": warm_recipe, "sgd": recipe_key(hp.base), "classes": ctx.benchmark.num_base_classes,
                "total_classes": ctx.num_classes_total,
                **{k: getattr(hp, k) for k in ("temperature", "balance", "loss_start_epoch", "alpha",
                                               "links_per_virtual", "shared_virtual")}}

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: FACTHparams = ctx.hparams
        num_base, num_classes = session.num_seen, ctx.num_classes_total
        if num_classes <= num_base:
            raise ValueError("FACT needs classes beyond the base session to reserve virtual prototypes for")
        init = backbone_init(ctx, hp.backbone, hp.pretrained, hp.frozen_stages)
        warm_backbone, warm_recipe = None, None
        if hp.warm_start is not None:
            warm_backbone = cross_entropy_base_model(session, ctx, hp.backbone, hp.warm_start).backbone
            warm_recipe = ctx.extra.pop("base_model")["recipe"]
        recipe = self._recipe(ctx, hp, warm_recipe)

        def train(model: FACTNetwork) -> None:
            if warm_backbone is not None:
                model.backbone.load_state_dict(warm_backbone.state_dict())
            generator = torch.Generator().manual_seed(ctx.stage_seed("base-data", stable_hash(recipe)))
            loss = FACTLoss(model, hp, session, generator)
            train_supervised(model, session.train, loss, hp.base, ctx, desc="FACT base session", forward=lambda x: x,
                             generator=generator)
            ctx.extra["fact"] = loss.summary()
            feats, labels = extract_features(model.backbone, session.train, ctx)
            with torch.no_grad():
                model.fc.weight[:num_base] = class_means(feats, labels, session.new_classes)

        self.model: FACTNetwork = cached_model(
            ctx, recipe, lambda: FACTNetwork(init.build(), num_classes, num_base, hp.temperature), train,
            data=session.train)
        self.model.requires_grad_(False)
        self.test_features = FrozenFeatureMemo(self.model.backbone)  # frozen from here on
        self.prototypes = self.model.fc.weight[:num_base].clone()
        self.virtual = F.normalize(self.model.fc.weight[num_base:], dim=1)
        self.temperature, self.eta, self.top_k = hp.temperature, hp.eta, hp.top_k
        self.incremental = False

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = extract_features(self.model.backbone, session.train, ctx)
        self.prototypes = torch.cat([self.prototypes, class_means(feats, labels, session.new_classes)])
        self.incremental = True

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        if not self.incremental:
            return cosine_logits(features, self.prototypes, self.temperature)
        return bimodal_scores(features, self.prototypes, self.virtual, self.temperature, self.eta, self.top_k)

    def classifier_weights(self) -> torch.Tensor:
        return self.prototypes

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        v = len(self.virtual)
        return MemoryDeclaration(feature_vectors=n + v, bytes=(n + v) * d * 4,
                                 notes=f"one mean feature per seen class and {v} virtual prototypes")


class FACTLoss:
    """FACT's base-session loss of an augmented batch (module docstring), called by
    :func:`~fscil_bench.toolkit.training.train_supervised` with the images as the "outputs"."""

    def __init__(self, model: FACTNetwork, hp: FACTHparams, session: Session, generator: torch.Generator):
        self.model, self.hp, self.generator = model, hp, generator
        self.halves = split_backbone(model.backbone)
        b, n = model.num_base, model.fc.out_features
        # Each virtual class is linked to `links_per_virtual` distinct base classes (FACT: 3, drawn once).
        links = torch.zeros(b, n)
        for v in range(b, n):
            links[torch.randperm(b, generator=generator)[: hp.links_per_virtual], v] = 1.0
        self.links = links.to(model.fc.weight.device)
        self.rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        n_train = len(session.train)
        self.steps_per_epoch = n_train // hp.base.batch_size if n_train > hp.base.batch_size else 1
        self.steps = 0
        # Loss sums stay on the device (read once, by summary()), so a step never waits for the host.
        self.totals = {k: torch.zeros((), device=model.fc.weight.device) for k in ("l1", "l2", "l3", "l4", "mixed_pairs")}

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model, hp, b = self.model, self.hp, self.model.num_base
        lam = float(self.rng.beta(hp.alpha, hp.alpha))  # drawn every batch, as FACT does
        epoch = self.steps // self.steps_per_epoch
        self.steps += 1
        maps = self.halves.front(images)
        features = self.halves.back(maps)
        virtual = model.fc.weight[b:] if hp.shared_virtual else model.frozen_virtual
        logits = torch.cat([cosine_logits(features, model.fc.weight[:b], hp.temperature),
                            cosine_logits(features, virtual, hp.temperature)], dim=1)
        l1 = F.cross_entropy(logits[:, :b], labels)
        self.totals["l1"] += l1.detach()
        if epoch < hp.loss_start_epoch:
            return l1
        masked = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), -1e9)
        pseudo = b + (masked * self.links[labels])[:, b:].argmax(1)
        l2 = F.cross_entropy(masked, pseudo)
        perm = torch.randperm(len(labels), generator=self.generator).to(labels.device)
        # The whole mixed batch goes through the back half (and its BatchNorm), as in FACT; pairs of
        # one class are then left out of L3 and L4 by a 0/1 weight (no host round trip).
        mixed_logits = cosine_logits(self.halves.back(lam * maps + (1 - lam) * maps[perm]), model.fc.weight,
                                     hp.temperature)
        keep = (labels[perm] != labels).float()
        kept = keep.sum().clamp(min=1.0)
        virtual_label = b + mixed_logits[:, b:].argmax(1)
        l3 = (F.cross_entropy(mixed_logits, virtual_label, reduction="none") * keep).sum() / kept
        masked_mixed = mixed_logits.masked_fill(F.one_hot(virtual_label, mixed_logits.shape[1]).bool(), -1e9)
        l4 = (F.cross_entropy(masked_mixed, mixed_logits[:, :b].argmax(1), reduction="none") * keep).sum() / kept
        for name, value in (("l2", l2), ("l3", l3), ("l4", l4), ("mixed_pairs", keep.sum())):
            self.totals[name] += value.detach()
        total_extra = l2 + l3 + l4
        return l1 + hp.balance * total_extra

    def summary(self) -> dict[str, float]:
        """Mean of each loss over the steps, and the mixed pairs kept."""
        steps = max(1, self.steps)
        return {k: (int(v) if k == "mixed_pairs" else round(float(v) / steps, 4)) for k, v in self.totals.items()}
