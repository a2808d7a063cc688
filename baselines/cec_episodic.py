"""CEC-style pseudo-incremental episodic training, simplified: a meta-learned classifier adapter.

In the spirit of Zhang et al., "Few-Shot Incremental Learning with Continually Evolved
Classifiers" (CEC), CVPR 2021. CEC decouples the two halves of the problem: a backbone is trained
with cross-entropy on the base classes and then frozen; each class is represented by a
classifier vector (a prototype), and a graph-attention model adapts the whole set of classifier
vectors to each other. That model is meta-trained on *pseudo-incremental* tasks sampled from the
base classes: a few base classes play the novel classes, represented only by the prototypes of
a handful of shots, while the rest keep their full prototypes, and the adapted classifiers must
classify queries of both.

What this implementation keeps and simplifies:

* Backbone: the shared cross-entropy base model (:func:`cross_entropy_base_model`), frozen.
* Classifier vectors: mean features (cosine prototypes), for base and novel classes alike.
  Base prototypes and the episode pool come from the features of ``feature_samples_per_class``
  base images per class (a seeded subset in ``quick``, all images in ``paper``), cached. Features
  are centred on that pool's mean feature before every cosine: the cross-entropy backbone's
  ReLU features all lie in one orthant, where cosines between classes are close to 1 and the
  adapter's residual could swamp their differences; centring spreads them around the origin,
  as CEC's cosine-trained backbone does.
* Adapter (CEC's graph model, reduced): one self-attention layer over the set of unit-norm
  classifier vectors with a residual connection, ``w_i' = u_i + O(sum_j a_ij V u_j)``,
  ``a_i = softmax_j(<Q u_i, K u_j> / sqrt(h))``. ``O`` starts at zero, so before training the
  method is exactly the decoupled-cosine prototype classifier.
* Pseudo-incremental episodes are drawn with learn2learn's task sampling (``MetaDataset`` /
  ``TaskDataset`` with ``NWays``, ``KShots``, ``LoadData``, ``RemapLabels``, behind
  :mod:`fscil_bench.integrations.learn2learn_tasks`): ``ways`` base classes act as novel classes
  with ``shots`` support features each, ``queries`` queries per pseudo-novel class plus
  ``old_queries`` queries from the other base classes are classified by ``scale * cos`` against
  the adapted classifiers of all base classes, with cross-entropy. Only the adapter is trained
  (Adam). CEC's rotation-synthesised pseudo classes and its multi-session pseudo tasks are left
  out. On a small base set, shots and queries are clamped to what every class can supply.
* Incremental sessions: the new classes' prototypes (from their shots) join the set, and the
  whole set is adapted again; a test image's logits are the scaled cosines to the adapted set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    SMOKE_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe,
)
from fscil_bench.toolkit.features import (
    FrozenFeatureMemo,
    base_feature_pool,
    class_means,
    extract_features,
)
from fscil_bench.toolkit.heads import cosine_logits
from fscil_bench.toolkit.training import OptimisationLoop, SGDRecipe


class ClassifierAdapter(nn.Module):
    """Self-attention over a set of classifier vectors ``(C, d)`` with a residual connection."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.query = nn.Linear(dim, hidden, bias=False)
        self.key = nn.Linear(dim, hidden, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.hidden = hidden

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        u = F.normalize(weights, dim=1)
        attention = torch.softmax(self.query(u) @ self.key(u).T / math.sqrt(self.hidden), dim=1)
        return u + self.out(attention @ self.value(u))


@dataclass(frozen=True)
class CECEpisodicHparams:
    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    feature_samples_per_class: int | None = 100  # base images per class behind prototypes and episodes (None: all)
    episodes: int = 400
    ways: int = 5  # pseudo-novel classes per episode
    shots: int = 5
    queries: int = 10  # per pseudo-novel class
    old_queries: int = 100  # queries from the pseudo-old classes per episode
    lr: float = 1e-3  # Adam, adapter only
    hidden: int = 128
    scale: float = 16.0


class CECEpisodic(MethodBase):
    name = "cec-episodic"
    paper = "Zhang et al., Few-Shot Incremental Learning with Continually Evolved Classifiers, CVPR 2021 (simplified)"
    presets = {
        "quick": CECEpisodicHparams(),
        "smoke": CECEpisodicHparams(base=SMOKE_BASE_SGD, feature_samples_per_class=None, episodes=10),
        "paper": {
            "default": CECEpisodicHparams(
                backbone="resnet18",
                base=SGDRecipe(epochs=100, lr=0.1, batch_size=128, warmup_epochs=1.0),
                feature_samples_per_class=None,
                episodes=5000,
                lr=2e-4,
            )
        },
    }

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        return [cross_entropy_recipe(ctx.hparams.backbone, ctx.hparams.base, ctx.benchmark.num_base_classes)]

    def fit_base(self, session: Session, ctx: Context) -> None:
        from fscil_bench.integrations.learn2learn_tasks import EpisodeSampler

        hp: CECEpisodicHparams = ctx.hparams
        self.backbone = cross_entropy_base_model(session, ctx, hp.backbone, hp.base).backbone
        self.test_features = FrozenFeatureMemo(self.backbone)  # the backbone never changes again
        self.scale = hp.scale
        key = ctx.extra["base_model"]["key"]
        _, feats, labels = base_feature_pool(ctx, session.train, self.backbone, key, hp.feature_samples_per_class)
        self.center = feats.mean(0)
        feats = feats - self.center
        self.prototypes = class_means(feats, labels, session.new_classes)

        torch.manual_seed(ctx.stage_seed("cec-adapter-init"))
        self.adapter = ClassifierAdapter(feats.shape[1], hp.hidden).to(ctx.device)
        # Small base sets (tests, tiny benchmarks) get episodes clamped to what the pool holds.
        fewest = int(torch.bincount(labels.cpu()).min())
        shots = min(hp.shots, max(1, fewest - 1))
        queries = max(1, min(hp.queries, fewest - shots))
        ways = min(hp.ways, len(self.prototypes) - 1)
        sampler = EpisodeSampler(labels.cpu(), ways, shots, queries, seed=ctx.stage_seed("cec-episodes"))
        generator = torch.Generator().manual_seed(ctx.stage_seed("cec-old-queries"))
        losses = self._meta_train(feats, labels.cpu(), sampler, generator, hp, ctx)
        ctx.extra["cec_episodic"] = {"episodes": hp.episodes, "ways": ways, "shots": shots, "queries": queries,
                                     "first_loss": losses[0] if losses else None,
                                     "last_loss": sum(losses[-20:]) / max(1, len(losses[-20:]))}
        self._adapt()

    def _meta_train(self, feats, labels, sampler, generator, hp, ctx) -> list[float]:
        num_base = len(self.prototypes)
        loop = OptimisationLoop(torch.optim.Adam(self.adapter.parameters(), lr=hp.lr), None, feats.device)
        self.adapter.train()
        losses = []
        for _ in ctx.progress(range(hp.episodes), desc="pseudo-incremental episodes", total=hp.episodes):
            episode = sampler.sample()
            is_old = torch.ones(num_base, dtype=torch.bool)
            is_old[episode.classes] = False
            old_classes = torch.nonzero(is_old).flatten()
            position = torch.full((num_base,), -1, dtype=torch.long)
            position[old_classes] = torch.arange(len(old_classes))
            # Pseudo-novel classes are represented by the mean of their few support features only.
            support = feats[episode.support.to(feats.device)].mean(1)
            weights = torch.cat([self.prototypes[old_classes.to(feats.device)], support])
            candidates = torch.nonzero(is_old[labels]).flatten()
            old_q = candidates[torch.randint(len(candidates), (hp.old_queries,), generator=generator)]
            query = torch.cat([episode.query.flatten(), old_q])
            target = torch.cat([
                len(old_classes) + torch.arange(sampler.ways).repeat_interleave(sampler.queries),
                position[labels[old_q]],
            ]).to(feats.device)
            logits = cosine_logits(feats[query.to(feats.device)], self.adapter(weights), self.scale)
            loop.step(F.cross_entropy(logits, target), 1)
            losses.append(loop.end_epoch())  # one episode per entry
        self.adapter.eval()
        return losses

    @torch.no_grad()
    def _adapt(self) -> None:
        self.adapted = self.adapter(self.prototypes)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        feats, labels = extract_features(self.backbone, session.train, ctx)
        self.prototypes = torch.cat([self.prototypes, class_means(feats - self.center, labels, session.new_classes)])
        self._adapt()

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features centred on the base pool's mean (the space the prototypes live in)."""
        return self.test_features(images) - self.center

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(features, self.adapted, self.scale)

    def classifier_weights(self) -> torch.Tensor:
        return self.adapted

    def memory(self) -> MemoryDeclaration:
        n, d = self.prototypes.shape
        return MemoryDeclaration(feature_vectors=n + 1, bytes=(n + 1) * d * 4,
                                 notes="one mean feature (prototype) per seen class, plus the base feature mean")
