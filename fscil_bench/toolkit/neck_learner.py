"""The NC-FSCIL learner, with its classifier and loss left open so ablations share every stage.

Yang et al., "Neural Collapse Inspired Feature-Classifier Alignment for Few-Shot Class
Incremental Learning" (NC-FSCIL), ICLR 2023. The model is a backbone, the projection neck of
:mod:`fscil_bench.models.neck` (unit-norm output, 512-d) and a classifier over the neck's output.

Stages:

1. Base session. Backbone, neck (and the classifier, when it has parameters) are trained end to
   end with SGD on the base classes (:func:`fscil_bench.training.train_supervised`, the
   benchmark's training augmentation). Then the mean backbone feature of every base class is
   computed once over the whole base training set (test-time transform) and kept. The trained
   model and these means are cached together under a hash of the recipe and the base data
   (:func:`fscil_bench.base_models.cached_model`). With ``train_backbone=False`` (the ``quick``
   presets) the backbone, taken from the shared cross-entropy base model, stays frozen: its
   features of the base training set are computed once (and cached, shared by every method
   that starts from that model) and only the neck and classifier are trained on them.
2. Incremental session ``t``. The backbone is frozen (no gradient, evaluation mode: its weights and
   BatchNorm statistics never change). The backbone features of the session's few shots are
   computed once: the test-time view plus ``augmented_views`` views under the training
   augmentation (fixed for the session, drawn from a generator seeded by the run and the
   session). Only the neck (and a learnable classifier) is then fine-tuned, with a fresh SGD, for
   ``steps`` steps (``session_steps[t - 1]`` when given) on batches from a pool holding every
   few-shot sample (each draw uses one of its views at random) and the kept mean features: every
   base class's once, every old novel class's ``copy_list[t - 1]`` times. Batches are fresh random
   subsets of the pool (``session_sampler="subsets"``) or shuffled passes over it with the
   remainder dropped (``"epochs"``, NC-FSCIL's loader). With ``feature_mixup_prob`` the neck's
   outputs are mixed before normalisation (NC-FSCIL's feature mixup). Afterwards the new classes'
   mean features (test-time view of their few shots) join the kept means.
3. Prediction: the logits of the seen classes computed from the neck's unit-norm output.

The kept class means are the method's only memory of the past; ``memory()`` declares them.

Subclasses choose the classifier (:meth:`NeckLearner.make_head`), the loss
(:meth:`NeckLearner.loss`), the logits (:meth:`NeckLearner.logits`) and how the classifier grows
(:meth:`NeckLearner.extend_head`); ``baselines/etf.py`` is NC-FSCIL itself (fixed ETF, dot
regression), ``baselines/etf_ce.py`` and ``baselines/etf_linear_ce.py`` the ablations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench.cache import stable_hash
from fscil_bench.data.mixing import grouped_permutation
from fscil_bench.models.etf import FixedETFClassifier
from fscil_bench.models.neck import ProjectionNeck
from fscil_bench.protocol import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.toolkit.backbones import BackboneInit, backbone_init
from fscil_bench.toolkit.base_models import (
    base_model_recipe_key,
    cached_model,
    cross_entropy_base_model,
    cross_entropy_recipe,
)
from fscil_bench.toolkit.feature_store import FeatureStore
from fscil_bench.toolkit.features import (
    FrozenFeatureMemo,
    cached_features,
    class_means,
    extract_features,
    feature_views,
)
from fscil_bench.toolkit.losses import cross_entropy_loss
from fscil_bench.toolkit.training import (
    OptimisationLoop,
    SGDRecipe,
    StepRecipe,
    recipe_key,
    sgd,
    train_on_features,
    train_supervised,
)

#: Bumped when this module changes what a cached base model holds.
ETF_BASE_VERSION = 1


@dataclass(frozen=True)
class NeckLearnerHparams:
    """Hyperparameters shared by NC-FSCIL and its ablations.

    Attributes:
        backbone: a name in :data:`fscil_bench.models.BACKBONES`.
        base: the base session's SGD recipe (backbone + neck + classifier, end to end).
        session: the incremental sessions' recipe (neck, and a learnable classifier, on cached features).
        feature_dim: the neck's output dimension (the ETF's ``d``; 512 in the paper).
        loss_weight: factor on the loss (10 for dot regression in the paper).
        base_reweight, session_reweight: weight samples by the inverse frequency of their class in
            the batch (:func:`fscil_bench.losses.inverse_frequency_weights`) in that stage.
        augmented_views: augmented views per few-shot sample cached in each incremental session,
            besides the test-time view.
        pretrained: the backbone's initial weights, a known name or a path
            (:mod:`fscil_bench.models.weights`, e.g. ``torchvision-resnet18-imagenet1k-v1``), loaded
            before base training; ``None`` trains the backbone from scratch.
        frozen_stages: with ``pretrained``, how many stages stay frozen in base training (``-1``:
            none, ``0``: the stem, ``k``: the stem and the first ``k`` residual stages).
        train_view, test_view: the method's own views (names in :data:`fscil_bench.data.views.VIEWS`;
            None: the benchmark's transforms). The test view is also the view of every feature the
            incremental stage uses (class means, few shots).
        session_steps: the incremental sessions' step counts, one per session (session ``t`` takes
            entry ``t - 1``); None: ``session.steps`` in every session.
        copy_list: how many times each old *novel* class's mean joins the pool of session ``t``
            (entry ``t - 1``; NC-FSCIL's ``copy_list``); None: once. Base means join once.
        session_sampler: ``"subsets"`` draws every step's batch afresh from the pool; ``"epochs"``
            walks shuffled orders of the pool, ``session.batch_size`` at a time, dropping the
            remainder (NC-FSCIL's loader).
        feature_mixup, feature_mixup_prob: with probability ``feature_mixup_prob`` per step the neck's
            outputs before normalisation are mixed, ``lambda h + (1 - lambda) h[perm]`` with ``lambda
            = feature_mixup`` fixed, and the loss is ``lambda L(y) + (1 - lambda) L(y[perm])``.
        feature_mixup_group: the permutation stays within consecutive groups of this many samples
            (NC-FSCIL mixes each GPU's 8 samples among themselves; None: the whole batch).
        etf_basis: ``"gaussian"`` or ``"uniform"``, the matrix the ETF's basis is drawn from
            (:mod:`fscil_bench.models.etf`).
        warm_start: a CPU shortcut for the ``quick`` presets: start the backbone from the shared
            cross-entropy base model trained with this recipe
            (:func:`fscil_bench.base_models.cross_entropy_base_model`, the one the other baselines
            use), then train backbone, neck and classifier end to end with ``base`` as usual.
            ``None`` (the paper's recipe) starts from scratch or from ``pretrained``.
        train_backbone: train the backbone in the base session (the paper). ``False`` keeps the
            initial backbone (``warm_start`` or ``pretrained``) frozen and trains only neck and
            classifier, with ``base``'s recipe, on its features of the base training set (test-time
            view, no augmentation): seconds instead of minutes on a CPU.
    """

    backbone: str
    base: SGDRecipe
    session: StepRecipe
    feature_dim: int = 512
    loss_weight: float = 10.0
    base_reweight: bool = False
    session_reweight: bool = False
    augmented_views: int = 4
    pretrained: str | None = None
    frozen_stages: int = -1
    warm_start: SGDRecipe | None = None
    train_backbone: bool = True
    train_view: str | None = None
    test_view: str | None = None
    session_steps: tuple[int, ...] | None = None
    copy_list: tuple[int, ...] | None = None
    session_sampler: str = "subsets"
    feature_mixup: float = 0.0
    feature_mixup_prob: float = 0.0
    feature_mixup_group: int | None = None
    etf_basis: str = "gaussian"


class NeckModel(nn.Module):
    """Backbone -> projection neck -> classifier, plus the base classes' mean backbone features
    (a buffer, so they are cached with the weights)."""

    def __init__(self, backbone: nn.Module, neck: ProjectionNeck, head: nn.Module, num_base: int):
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.register_buffer("base_means", torch.zeros(num_base, backbone.out_dim))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm neck features of ``images``."""
        return self.neck(self.backbone(images))


def pool_batches(pool: int, batch: int, sampler: str, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``batch`` row indices into a pool of ``pool`` rows: ``"subsets"``, a fresh
    random subset each time; ``"epochs"``, shuffled orders of the pool cut into batches, the
    remainder of each order dropped."""
    if sampler not in ("subsets", "epochs"):
        raise ValueError(f"unknown session sampler {sampler!r}; choose subsets or epochs")
    while True:
        order = torch.randperm(pool, generator=generator)
        if sampler == "subsets":
            yield order[:batch]
            continue
        for start in range(0, pool - batch + 1, batch):
            yield order[start:start + batch]


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run tiny CPU operations (the neck on a batch of 64 vectors) on one thread: splitting them
    over threads only adds synchronisation, several times the work on a busy machine."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class NeckLearner(MethodBase):
    """NC-FSCIL's stages with the classifier and the loss left to subclasses (see the module docstring)."""

    #: Tag of the base recipe (part of the cache key): methods with different losses train apart.
    kind: ClassVar[str] = ""

    # --- what subclasses choose ----------------------------------------------------------------

    def make_head(self, hp: NeckLearnerHparams, ctx: Context, num_base: int) -> nn.Module:
        """The classifier over the neck's output, built before the base session."""
        raise NotImplementedError

    def head_recipe(self, hp: NeckLearnerHparams, ctx: Context) -> dict[str, Any]:
        """What defines the classifier and the loss, for the base model's cache key."""
        return {}

    def loss(self, head: nn.Module, features: torch.Tensor, labels: torch.Tensor, num_seen: int,
             reweight: bool) -> torch.Tensor:
        """The training loss (before ``loss_weight``) of unit-norm ``features``."""
        return cross_entropy_loss(self.logits(head, features, num_seen), labels, reweight)

    def logits(self, head: nn.Module, features: torch.Tensor, num_seen: int) -> torch.Tensor:
        """``(B, num_seen)`` logits of unit-norm ``features``."""
        return head(features, num_seen)

    def extend_head(self, head: nn.Module, num_seen: int) -> None:
        """Make room for the classes of a new session (a fixed ETF already has every class)."""

    # --- the stages ----------------------------------------------------------------------------

    def base_recipe(self, hp: NeckLearnerHparams, ctx: Context, init: BackboneInit,
                    warm_recipe_key: str | None) -> dict[str, Any]:
        """What defines the base model (its cache key material), given the backbone's
        initialisation and the recipe key of the warm-start model (None without one; the data it
        was trained on is keyed by :func:`cached_model`)."""
        return {
            "kind": self.kind,
            "version": ETF_BASE_VERSION,
            "backbone": hp.backbone,
            "pretrained_sha256": init.weights.sha256 if init.weights else None,
            **({"frozen_stages": init.frozen_stages} if init.frozen_stages >= 0 else {}),
            **init.extra_identity,
            "warm_start": warm_recipe_key,
            "train_backbone": hp.train_backbone,
            "feature_dim": hp.feature_dim,
            "head": self.head_recipe(hp, ctx),
            "loss_weight": hp.loss_weight,
            "reweight": hp.base_reweight,
            "sgd": recipe_key(hp.base),
            "classes": ctx.benchmark.num_base_classes,
            "total_classes": ctx.num_classes_total,
        }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: NeckLearnerHparams = ctx.hparams
        num_base = ctx.benchmark.num_base_classes
        warm = [cross_entropy_recipe(hp.backbone, hp.warm_start, num_base)] if hp.warm_start is not None else []
        warm_recipe_key = base_model_recipe_key(ctx.benchmark.id, ctx.seed, warm[0], ctx.views) if warm else None
        return [*warm, self.base_recipe(hp, ctx, self.initial_backbone(ctx), warm_recipe_key)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: NeckLearnerHparams = ctx.hparams
        self.hp = hp
        num_base = session.num_seen
        if not hp.train_backbone and hp.warm_start is None and not hp.pretrained:
            raise ValueError("train_backbone=False keeps the initial backbone frozen: give warm_start or pretrained")
        if hp.warm_start is not None and hp.pretrained:
            raise ValueError("warm_start and pretrained are exclusive: choose one backbone initialisation")
        init = self.initial_backbone(ctx, session)
        ctx.extra["backbone_init"] = (f"pretrained weights {init.weights.name} (sha256 {init.weights.sha256[:16]})"
                                      if init.weights else "trained from scratch on the base session")
        warm_backbone, warm_key, warm_recipe_key = None, None, None
        if hp.warm_start is not None:
            warm_backbone = cross_entropy_base_model(session, ctx, hp.backbone, hp.warm_start).backbone
            warm_note = ctx.extra.pop("base_model")
            warm_key, warm_recipe_key = warm_note["key"], warm_note["recipe_key"]
            ctx.extra["backbone_init"] = (f"the shared cross-entropy base model {warm_key}, then trained end to end "
                                          "with this method's classifier and loss")
        recipe = self.base_recipe(hp, ctx, init, warm_recipe_key)

        # A backbone that is never trained (warm start or pretrained weights, kept frozen) has
        # features that depend on its initialisation alone: they are cached and shared.
        frozen_key = None
        if not hp.train_backbone:
            frozen_key = warm_key or init.feature_key or stable_hash({"backbone": hp.backbone, **init.identity})

        def build() -> NeckModel:
            backbone = init.build()
            neck = ProjectionNeck(backbone.out_dim, hp.feature_dim)
            return NeckModel(backbone, neck, self.make_head(hp, ctx, num_base), num_base)

        def train(model: NeckModel) -> None:
            if warm_backbone is not None:
                model.backbone.load_state_dict(warm_backbone.state_dict())
            generator = torch.Generator().manual_seed(ctx.stage_seed("base-data", stable_hash(recipe)))

            def loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return hp.loss_weight * self.loss(model.head, features, labels, num_base, hp.base_reweight)

            if hp.train_backbone:
                train_supervised(model, session.train, loss, hp.base, ctx, desc="base session",
                                 forward=model.embed, generator=generator,
                                 predict=lambda x: self.logits(model.head, model.embed(x), num_base))
                feats, labels = extract_features(model.backbone, session.train, ctx)
            else:
                feats, labels = (cached_features(ctx, model.backbone, frozen_key, session.train, tag="eval") if frozen_key
                                 else extract_features(model.backbone, session.train, ctx))
                train_on_features([model.neck, model.head], feats, labels, lambda f, y: loss(model.neck(f), y),
                                  hp.base, ctx, desc="base session (neck)", generator=generator)
            model.base_means.copy_(class_means(feats, labels, session.new_classes))

        self.model: NeckModel = cached_model(ctx, recipe, build, train, data=session.train)
        self.model.backbone.requires_grad_(False)
        self.model.eval()
        store = FeatureStore(ctx.cache_dir / "features" / f"memo-{frozen_key}") if frozen_key else None
        self.test_features = FrozenFeatureMemo(self.model.backbone, store)  # frozen from here on
        self.means = self.model.base_means.clone()
        self.mean_labels = torch.tensor(session.new_classes, device=ctx.device)
        self.num_seen = self.num_base = num_base

    def initial_backbone(self, ctx: Context, session: Session | None = None) -> BackboneInit:
        """How the backbone starts: from scratch or from ``pretrained`` weights (subclasses may build
        it elsewhere, e.g. :class:`fscil_bench.integrations.pretrained.LibraryBackbones`).
        ``session`` is the base session (None when only the recipe is asked for)."""
        hp: NeckLearnerHparams = ctx.hparams
        return backbone_init(ctx, hp.backbone, hp.pretrained, hp.frozen_stages)

    def session_features(self, session: Session, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features ``(N, 1 + augmented_views, C)`` of the session's samples (view 0: the
        test-time transform) and their labels, computed once with the backbone in evaluation mode."""
        generator = torch.Generator().manual_seed(ctx.stage_seed("session-views", session.index))
        views = feature_views(self.model.backbone, session.train, ctx, ctx.hparams.augmented_views, generator)
        return views, session.train.labels.to(ctx.device)

    def fit_session(self, session: Session, ctx: Context) -> None:
        views, labels = self.session_features(session, ctx)
        self.extend_head(self.model.head, session.num_seen)
        self.tune_neck(views, labels, session, ctx)
        self.means = torch.cat([self.means, class_means(views[:, 0], labels, session.new_classes)])
        self.mean_labels = torch.cat([self.mean_labels, torch.tensor(session.new_classes, device=ctx.device)])
        self.num_seen = session.num_seen
        self.model.eval()

    def old_pool(self, session: Session, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept means that join session ``session``'s pool, with their labels: every base mean
        once, every old novel class's mean ``copy_list[t - 1]`` times (once without a copy list)."""
        copies = ctx.hparams.copy_list
        repeat = copies[min(session.index, len(copies)) - 1] if copies else 1
        if repeat == 1:
            return self.means, self.mean_labels
        counts = torch.ones(len(self.means), dtype=torch.long, device=self.means.device)
        counts[self.num_base:] = repeat
        return self.means.repeat_interleave(counts, 0), self.mean_labels.repeat_interleave(counts)

    def tune_neck(self, views: torch.Tensor, labels: torch.Tensor, session: Session, ctx: Context) -> None:
        """Fine-tune the neck (and a learnable classifier) on the few-shot features plus the old means."""
        hp: NeckLearnerHparams = ctx.hparams
        recipe = hp.session
        steps = hp.session_steps[min(session.index, len(hp.session_steps)) - 1] if hp.session_steps else recipe.steps
        model = self.model
        params = [p for p in [*model.neck.parameters(), *model.head.parameters()] if p.requires_grad]
        loop = OptimisationLoop(sgd(params, recipe), lambda step: recipe.lr_at(step, steps), ctx.device)
        old, old_labels = self.old_pool(session, ctx)
        n_new, n_views = views.shape[:2]
        pool = n_new + len(old)
        batch = min(recipe.batch_size, pool)
        generator = torch.Generator().manual_seed(ctx.stage_seed("neck-steps", session.index))
        draws = pool_batches(pool, batch, hp.session_sampler, generator)
        model.neck.train()
        model.head.train()
        with _one_cpu_thread(ctx.device):
            for _ in ctx.progress(range(steps), desc=f"session {session.index} neck", total=steps):
                idx = next(draws).to(ctx.device)
                view = torch.randint(n_views, (batch,), generator=generator).to(ctx.device)
                is_new = idx < n_new
                new_idx, old_idx = idx.clamp(max=n_new - 1), (idx - n_new).clamp(min=0)
                x = torch.where(is_new[:, None], views[new_idx, view], old[old_idx])
                y = torch.where(is_new, labels[new_idx], old_labels[old_idx])
                loop.set_lr()
                loop.step(hp.loss_weight * self.session_loss(x, y, session, generator), batch)
        model.eval()

    def session_loss(self, x: torch.Tensor, y: torch.Tensor, session: Session, generator: torch.Generator) -> torch.Tensor:
        """The incremental stage's loss of backbone features ``x`` (before ``loss_weight``), with
        NC-FSCIL's feature mixup when the hyperparameters ask for it."""
        hp: NeckLearnerHparams = self.hp
        head, neck = self.model.head, self.model.neck
        mix = hp.feature_mixup_prob > 0 and float(torch.rand(1, generator=generator)) < hp.feature_mixup_prob
        if not mix:
            return self.loss(head, neck(x), y, session.num_seen, hp.session_reweight)
        lam = hp.feature_mixup
        perm = grouped_permutation(len(y), hp.feature_mixup_group, generator).to(y.device)
        z = neck.project(x)
        h = F.normalize(lam * z + (1 - lam) * z[perm], dim=1)
        return (lam * self.loss(head, h, y, session.num_seen, hp.session_reweight)
                + (1 - lam) * self.loss(head, h, y[perm], session.num_seen, hp.session_reweight))

    def head_weights(self, head: nn.Module, num_seen: int) -> torch.Tensor | None:
        """The ``(num_seen, feature_dim)`` classifier vectors of the seen classes over the neck's
        output (None when the classifier has no such vectors)."""
        return None

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The neck's unit-norm output (the features the classifier acts on)."""
        self.model.eval()
        return self.model.neck(self.test_features(images))

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.logits(self.model.head, features, self.num_seen)

    def classifier_weights(self) -> torch.Tensor | None:
        return self.head_weights(self.model.head, self.num_seen)

    def memory(self) -> MemoryDeclaration:
        means = getattr(self, "means", None)
        if means is None:
            return MemoryDeclaration(notes="nothing kept yet")
        n, d = means.shape
        return MemoryDeclaration(
            feature_vectors=n,
            bytes=n * d * means.element_size(),
            notes="one mean backbone feature per class learned so far (base classes: whole base set; "
                  "later classes: their few shots), replayed when fine-tuning the neck",
        )


class FixedETFLearner(NeckLearner):
    """A :class:`NeckLearner` whose classifier is a fixed simplex ETF over every class of the
    benchmark (``ctx.num_classes_total`` columns, seeded by the run's seed)."""

    def make_head(self, hp: NeckLearnerHparams, ctx: Context, num_base: int) -> nn.Module:
        return FixedETFClassifier(ctx.num_classes_total, hp.feature_dim, seed=ctx.stage_seed("etf"), basis=hp.etf_basis)

    def head_recipe(self, hp: NeckLearnerHparams, ctx: Context) -> dict[str, Any]:
        basis = {"basis": hp.etf_basis} if hp.etf_basis != "gaussian" else {}
        return {"classifier": "fixed-simplex-etf", "classes": ctx.num_classes_total, "dim": hp.feature_dim, **basis}

    def head_weights(self, head: nn.Module, num_seen: int) -> torch.Tensor:
        """The ETF prototypes of the seen classes, one per row."""
        return head.prototypes[:, :num_seen].T
