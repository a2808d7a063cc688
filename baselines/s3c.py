"""S3C: self-supervised stochastic classifiers.

Kalla and Biswas, "S3C: Self-Supervised Stochastic Classifiers for Few-Shot Class-Incremental
Learning", ECCV 2022; official code JAYATEJAK/S3C@a1003da (the paths below are in that
repository; it ships the paper as ``S3C.pdf``).

* Rotation classes: every image is seen under the four rotations ``rot90(x, k)``, ``k = 0..3``, as
  the joint class ``4 y + k`` (``models/s3c/helper.py:18-20``; :mod:`fscil_bench.toolkit.fixed_transforms`).
* Feature: the pooled backbone output ``u`` goes through CEC's attention block on a sequence of one
  token (``Network.py:78-86``). With one token the attention weight is 1, so the block is
  ``LayerNorm(u + Dropout_0.5(W_o (a W_v u) + b_o))`` where ``a`` is the weight 1 after
  ``Dropout_0.1`` (0, or 1/0.9, per sample, in training mode); the query and key projections have
  no effect and are left out (:class:`SingleTokenAttention`).
* Stochastic cosine classifier (``Network.py:10-34``): one mean ``mu`` and one raw scale ``sigma``
  per (class, rotation) row and dimension; a training forward draws ``w = mu + softplus(sigma - 4) eps``,
  ``eps ~ N(0, I)`` (fresh every forward), and scores ``16 cos(x, w)``; at test time ``w = mu``.
* Base session (``helper.py:8-43``): cross-entropy over the ``4B`` base rows with a stochastic draw;
  SGD (momentum 0.9, Nesterov, weight decay 5e-4) over everything, multi-step schedule. ``mu`` is not
  replaced by class means afterwards (``fscil_trainer.py:137`` is commented out). The mean feature
  of every class (unrotated, test view, evaluation mode) is kept as its prototype.
* Session ``t`` (``fscil_trainer.py:153-246``): first ``mu[4c + k]`` = the mean feature of the new
  class's shots under rotation ``k``; then only the classifier (``mu`` and ``sigma`` of every row) is
  fine-tuned for ``session_steps`` full-batch steps, BatchNorm in evaluation mode but the attention
  block's dropouts active, by SGD (momentum 0.9, dampening 0.9, no weight decay) on
  ``CE(rotated shots, 4y + k) + proto_weight * CE(old prototypes, 4c)``, both scored by one stochastic
  draw over the ``4C`` seen rows. The old prototypes enter the classifier directly and only as
  rotation 0.
* Inference (``helper.py:181-245``): class ``c`` scores ``(1/4) sum_k 16 cos(x(rot_k image), mu[4c + k])``;
  the paper reports this aggregated accuracy (S3C.pdf pp. 9, 12).

Where this implementation differs from the official code, and why:

* Checkpoint: the official code keeps the base epoch with the best *test* accuracy
  (``fscil_trainer.py:98-111``); here the last epoch, always.
* The paper (p. 6, p. 8) shares one ``sigma`` among the rotations of a class and initialises a new
  class's ``sigma`` from its most similar base class through GloVe vectors; the code does neither
  (one ``sigma`` per row and dimension; new rows keep ``sigma = 0``). This follows the code.
* The eps draws and the attention block's dropout masks come from the run's generators (never
  the global random state); the prototypes are not shuffled before the loss
  (``fscil_trainer.py:209-211``; the loss does not depend on their order).

Presets. ``paper`` follows the official scripts where they run: CIFAR ``run_cifar_s3c.sh`` (200
epochs, lr 0.1, steps at 120 and 160, session lr 0.01, proto weight 5) and CUB ``run_cub_s3c.sh``
(100 epochs, lr 0.03, steps at 30/40/60/80, session lr 0.003, proto weight 5). The mini script
does not run (``lamda_proto 1`` lacks its dash), so mini takes the paper's recipe (p. 10: 200 epochs,
steps at 120 and 160, proto weight 5 "for all our experiments") with the script's session lr 0.01.
All: batch 128, 100 session steps, scale 16 (``train.py`` defaults and scripts). ``quick`` keeps the
whole method (rotation classes, attention block, stochastic classifier, prototype-anchored session
fine-tuning, rotation-aggregated inference) and cuts the base training to CPU minutes: convnet4-small
whose backbone starts from the suite's shared quick base model (``warm_start``: cross-entropy, 4
epochs; from scratch, two epochs of S3C's loss leave glyphs100 at chance), 2 epochs on 180 images
per base class at batch 64, lr 0.05 on a cosine schedule with a half-epoch warm-up (paper: 200
epochs of every image at batch 128, lr 0.1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.cache import stable_hash
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.base_models import QUICK_BACKBONE, QUICK_BASE_SGD, cached_model, warm_start_recipe, warm_start_weights
from fscil_bench.toolkit.features import FrozenFeatureMemo, class_means, extract_features
from fscil_bench.toolkit.fixed_transforms import transform_set
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.own_base import base_subset, train_on_raw_batches
from fscil_bench.toolkit.training import OptimisationLoop, SGDRecipe, recipe_key

ROTATIONS = transform_set("rotation4")


@dataclass(frozen=True)
class S3CHparams:
    """``warm_start``: start the backbone from the shared cross-entropy base model of this recipe
    (None: from scratch or ``pretrained``)."""

    backbone: str = QUICK_BACKBONE
    pretrained: str | None = None
    warm_start: SGDRecipe | None = QUICK_BASE_SGD
    base: SGDRecipe = SGDRecipe(epochs=2, lr=0.05, batch_size=64, warmup_epochs=0.5, nesterov=True)
    base_images_per_class: int | None = 180  # None: every base image
    scale: float = 16.0
    sigma_offset: float = 4.0  # std = softplus(sigma - offset)
    session_steps: int = 100
    session_lr: float = 0.01
    proto_weight: float = 5.0
    train_view: str | None = None  # None: the benchmark's transforms
    test_view: str | None = None


def _paper_sgd(epochs: int, lr: float, milestones: tuple[int, ...]) -> SGDRecipe:
    # fscil_trainer.py:37-44: SGD, momentum 0.9, Nesterov, wd 5e-4 (-decay), MultiStepLR gamma 0.1
    return SGDRecipe(epochs=epochs, lr=lr, batch_size=128, schedule="step", milestones=milestones, gamma=0.1,
                     nesterov=True)


_PAPER_CIFAR = S3CHparams(backbone="resnet20", warm_start=None, base=_paper_sgd(200, 0.1, (120, 160)),
                          base_images_per_class=None, train_view="cec-cifar-train", test_view="cec-cifar-test")


class SingleTokenAttention(nn.Module):
    """CEC's one-head attention block applied to a single token (module docstring). In training
    mode its two dropout masks are drawn from the generator passed to :meth:`forward`, so a run's
    draws never depend on the process's global random state."""

    attention_drop = 0.1
    output_drop = 0.5

    def __init__(self, dim: int):
        super().__init__()
        self.value = nn.Linear(dim, dim, bias=False)
        nn.init.normal_(self.value.weight, std=math.sqrt(2.0 / (2 * dim)))
        self.out = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.out.weight)
        self.norm = nn.LayerNorm(dim)

    def forward(self, u: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        weight = torch.ones(len(u), 1, device=u.device, dtype=u.dtype)
        branch_mask = torch.ones_like(u)
        if self.training:
            if generator is None:
                raise ValueError("SingleTokenAttention draws its dropout masks from a generator in training mode")
            weight = _dropout_mask(weight.shape, self.attention_drop, generator).to(u)
            branch_mask = _dropout_mask(u.shape, self.output_drop, generator).to(u)
        return self.norm(u + branch_mask * self.out(weight * self.value(u)))


def _dropout_mask(shape: torch.Size, p: float, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout's mask: 0 with probability ``p``, else ``1 / (1 - p)``, drawn from ``generator``."""
    return (torch.rand(shape, generator=generator) >= p).float() / (1 - p)


class StochasticCosineClassifier(nn.Module):
    """Rows ``w = mu + softplus(sigma - offset) * eps`` (``eps`` given), or ``mu``; logits ``scale cos(x, w)``."""

    def __init__(self, dim: int, rows: int, scale: float, offset: float):
        super().__init__()
        self.mu = nn.Parameter(0.01 * torch.randn(rows, dim))
        self.sigma = nn.Parameter(torch.zeros(rows, dim))
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        w = self.mu if eps is None else self.mu + F.softplus(self.sigma - self.offset) * eps
        return cosine_logits(x, w, self.scale)

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """One ``eps ~ N(0, I)`` of the rows' shape, from ``generator``."""
        return torch.randn(self.mu.shape, generator=generator).to(self.mu.device)


class S3CNetwork(nn.Module):
    def __init__(self, backbone: nn.Module, rows: int, scale: float, offset: float):
        super().__init__()
        self.backbone = backbone
        self.attention = SingleTokenAttention(backbone.out_dim)
        self.classifier = StochasticCosineClassifier(backbone.out_dim, rows, scale, offset)

    def features(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The attention block's output on the pooled backbone features (``generator``: the
        dropout masks' draws in training mode)."""
        return self.attention(self.backbone(x), generator)


class S3C(MethodBase):
    name = "s3c"
    paper = "Kalla and Biswas, S3C: Self-Supervised Stochastic Classifiers for Few-Shot Class-Incremental Learning, ECCV 2022"
    presets = {
        "quick": S3CHparams(),
        "smoke": S3CHparams(warm_start=None, base=SGDRecipe(epochs=1, lr=0.05, batch_size=16, nesterov=True),
                            base_images_per_class=None, session_steps=5),
        "paper": {
            "cifar100": _PAPER_CIFAR,
            "mini_imagenet": dataclasses.replace(_PAPER_CIFAR, backbone="resnet18", train_view="cec-mini-train",
                                                 test_view="cec-mini-test"),
            "cub200": dataclasses.replace(_PAPER_CIFAR, backbone="resnet18", pretrained="torchvision-resnet18-imagenet1k-v1",
                                          base=_paper_sgd(100, 0.03, (30, 40, 60, 80)), session_lr=0.003,
                                          train_view="cec-cub-train", test_view="cec-cub-test"),
            "default": _PAPER_CIFAR,
        },
    }

    @staticmethod
    def base_recipe(hp: S3CHparams, ctx: Context, init: dict[str, Any], warm: dict[str, Any] | None) -> dict[str, Any]:
        """The cache key material of the base model (``init``: the backbone's identity; ``warm``:
        the recipe of the model it starts from)."""
        return {"kind": "s3c", "version": 2, "backbone": hp.backbone, "sgd": recipe_key(hp.base),
                "classes": ctx.benchmark.num_base_classes, "rows": ROTATIONS.size * ctx.num_classes_total,
                "images_per_class": hp.base_images_per_class, "scale": hp.scale, "sigma_offset": hp.sigma_offset,
                "warm_start": warm, **init}

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: S3CHparams = ctx.hparams
        warm = [] if hp.warm_start is None else [warm_start_recipe(ctx, hp.backbone, hp.warm_start)]
        init = backbone_init(ctx, hp.backbone, hp.pretrained).identity
        return warm + [self.base_recipe(hp, ctx, init, warm[0] if warm else None)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: S3CHparams = ctx.hparams
        init = backbone_init(ctx, hp.backbone, hp.pretrained)
        rows = ROTATIONS.size * ctx.num_classes_total
        warm_weights, warm_recipe = warm_start_weights(session, ctx, hp.backbone, hp.warm_start)
        recipe = self.base_recipe(hp, ctx, init.identity, warm_recipe)
        generator = torch.Generator().manual_seed(ctx.stage_seed("s3c-base", stable_hash(recipe)))
        data = base_subset(session.train, hp.base_images_per_class, ctx)
        view, base_rows = session.train.train_transform, ROTATIONS.size * session.num_seen

        def train(model: S3CNetwork) -> None:
            if warm_weights is not None:
                model.backbone.load_state_dict(warm_weights)

            def batch_loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                x = ROTATIONS.expand(view(images, generator))
                eps = model.classifier.draw(generator)
                logits = model.classifier(model.features(x, generator), eps)[:, :base_rows]
                return F.cross_entropy(logits, ROTATIONS.joint_labels(labels))

            train_on_raw_batches(model, data, batch_loss, hp.base, ctx, "S3C base session", generator)

        build = lambda: S3CNetwork(init.build(), rows, hp.scale, hp.sigma_offset)  # noqa: E731
        self.network = cached_model(ctx, recipe, build, train, data=data)
        self.network.requires_grad_(False)  # the backbone and the attention block are frozen from now on
        self.generator = torch.Generator().manual_seed(ctx.stage_seed("s3c-sessions"))
        self.test_features = FrozenFeatureMemo(self._rotated_features)
        self.num_seen = session.num_seen
        self.prototypes = self._class_means(session, ctx)

    @torch.no_grad()
    def _rotated_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 4 d)``: the features of the four rotations of every image, side by side (evaluation mode)."""
        self.network.eval()
        return self.network.features(ROTATIONS.expand(images)).view(len(images), -1)

    @torch.no_grad()
    def _class_means(self, session: Session, ctx: Context) -> torch.Tensor:
        feats, labels = extract_features(self.network.features, session.train, ctx)
        return class_means(feats, labels, session.new_classes)

    def fit_session(self, session: Session, ctx: Context) -> None:
        hp: S3CHparams = ctx.hparams
        net, clf = self.network, self.network.classifier
        images, labels = next(session.train.batches(len(session.train), augment=False, device=ctx.device))
        targets = ROTATIONS.joint_labels(labels.to(ctx.device))
        with torch.no_grad():
            net.eval()
            pooled = net.backbone(ROTATIONS.expand(images))  # BatchNorm in evaluation mode throughout
            feats = net.attention(pooled)
            for row in torch.unique(targets).tolist():
                clf.mu[row] = feats[targets == row].mean(0)
        self.num_seen = session.num_seen
        seen_rows = ROTATIONS.size * self.num_seen
        old = self.prototypes
        old_targets = ROTATIONS.size * torch.arange(len(old), device=ctx.device)
        params = list(clf.parameters())
        for p in params:
            p.requires_grad_(True)
        loop = OptimisationLoop(torch.optim.SGD(params, lr=hp.session_lr, momentum=0.9, dampening=0.9, weight_decay=0),
                                None, ctx.device)
        net.attention.train()  # its dropouts are active while the shots' features are computed
        for _ in range(hp.session_steps):
            with torch.no_grad():
                shots = net.attention(pooled, self.generator)
            logits = clf(torch.cat([old, shots]), clf.draw(self.generator))[:, :seen_rows]
            loss = hp.proto_weight * F.cross_entropy(logits[: len(old)], old_targets) \
                + F.cross_entropy(logits[len(old):], targets)
            loop.step(loss, len(targets))
        net.eval()
        net.requires_grad_(False)
        self.prototypes = torch.cat([old, self._class_means(session, ctx)])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.test_features(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        clf = self.network.classifier
        return ROTATIONS.aggregated_cosine(features, clf.mu, self.num_seen, clf.scale)

    def classifier_weights(self) -> torch.Tensor:
        """Row ``c``: the four rotation rows of class ``c`` side by side (the space of :meth:`embed`)."""
        mu = self.network.classifier.mu.detach()
        return mu[: ROTATIONS.size * self.num_seen].reshape(self.num_seen, -1)

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        return MemoryDeclaration(feature_vectors=n, bytes=n * d * 4,
                                 notes="one mean feature (prototype) per seen class, replayed into the session loss")
