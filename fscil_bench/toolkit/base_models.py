"""Base-session models cached by their recipe and the data they are trained on.

Methods that share a base recipe (same backbone, data, hyperparameters and seed) train it once:
the first trains and saves it, the others load it. An entry is keyed by two digests:

* the *recipe key* (:func:`base_model_recipe_key`): the benchmark id, the seed, the recipe, the
  method's own views and ``BASE_CODE_VERSION`` (bumped when the training code changes what it
  produces). It also seeds the initial weights, so the same recipe starts from the same weights
  whatever the bytes of the data;
* the *data digest*: sha256 of the training images and labels (:meth:`LabelledImages.digest`),
  so a benchmark whose images were replaced (a corrected custom data set, another copy of a
  data set under ``--data-root``) is never served a model trained on the old ones.

The entry's name, ``<key>.pt`` (:func:`base_model_key`), is the digest of both; ``key``
identifies the weights exactly (feature caches built on the model use it as their network key).
A method's ``base_model_recipes`` gives the recipes its ``fit_base`` asks for, so a dry run can
tell which models would be trained and which loaded, without training.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench import distributed
from fscil_bench.cache import exclusive_lock, stable_hash, verified, write_checked
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.protocol import Context, Session
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.heads import BackboneWithCosineHead, BackboneWithHead
from fscil_bench.toolkit.training import SGDRecipe, recipe_key, train_supervised

BASE_CODE_VERSION = 1


def _verified_state(path: Path) -> dict[str, Any] | None:
    if not verified(path):
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None


def _load_or_train(ctx: Context, path: Path, model: nn.Module, train: Callable[[nn.Module], None]) -> dict[str, Any]:
    """Load ``model``'s weights from ``path`` when they verify, else train it and save them there."""
    state = _verified_state(path) if distributed.is_main_process() else None
    if distributed.broadcast_object(state is not None) and state is None:
        state = _verified_state(path)
    if state is not None:
        model.load_state_dict(state)
        ctx.log(f"base model {path.stem}: loaded from cache")
        return {"cache_hit": True}
    if path.exists():
        ctx.log(f"base model cache {path} failed its checksum; retraining")
    start = time.perf_counter()
    train(model)
    note = {"cache_hit": False, "train_seconds": round(time.perf_counter() - start, 3)}
    if distributed.is_main_process():
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        write_checked(path, lambda tmp: torch.save(state, tmp))
    distributed.barrier()  # the other ranks load rank 0's weights, so every rank holds the same model
    if not distributed.is_main_process() and (saved := _verified_state(path)) is not None:
        model.load_state_dict(saved)
    return note


def base_model_recipe_key(benchmark_id: str, seed: int, recipe: dict[str, Any],
                          views: dict[str, str] | None = None) -> str:
    """The recipe key of the base model of ``recipe`` on a benchmark (``name@version``) and seed;
    a method's own train/test ``views`` (:attr:`Context.views`) train another model. A recipe
    with a ``"views"`` entry names the views it is trained on itself (None: the benchmark's), so
    a method with views of its own can ask for the model every method without views shares."""
    if "views" in recipe:
        recipe = dict(recipe)
        views = recipe.pop("views")
    return stable_hash({"benchmark": benchmark_id, "seed": seed, "recipe": recipe, "code": BASE_CODE_VERSION,
                        **({"views": views} if views else {})})


def base_model_key(recipe_key: str, data_sha256: str) -> str:
    """The cache entry of the model of ``recipe_key`` trained on data whose digest is ``data_sha256``."""
    return stable_hash({"recipe": recipe_key, "data": data_sha256})


def base_model_path(cache_dir: Path, key: str) -> Path:
    """Where the base model of ``key`` is cached (a checked entry: a sidecar holds its sha256)."""
    return Path(cache_dir) / "base_models" / f"{key}.pt"


def cached_model(
    ctx: Context,
    recipe: dict[str, Any],
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], None],
    *,
    data: LabelledImages,
) -> nn.Module:
    """Return the model of ``recipe`` trained on ``data``: trained by ``train`` on first use and
    loaded afterwards.

    ``data`` is every sample ``train`` learns from (the base session's training set). ``build``
    is called under a seed derived from the recipe key (not the data), so every method asking for
    the same recipe starts from the same initial weights. The recipe key also holds the method's
    own views (``ctx.views``) when it has any. Cache use is noted in ``ctx.extra["base_model"]``:
    ``key`` (the entry, recipe and data), ``recipe_key``, ``data_sha256``, ``recipe``,
    ``cache_hit`` (and ``train_seconds`` when it trained).
    """
    recipe_key = base_model_recipe_key(ctx.benchmark.id, ctx.seed, recipe, ctx.views)
    data_sha256 = data.digest()
    key = base_model_key(recipe_key, data_sha256)
    path = base_model_path(ctx.cache_dir, key)
    torch.manual_seed(ctx.stage_seed("base-init", recipe_key))
    model = build().to(ctx.device)
    # Another process of a parallel run (a worker, an array task) may be training this very model:
    # the lock makes it wait and then load it, instead of training it a second time. Under
    # torchrun only rank 0 takes the lock and decides hit or miss for all ranks (they must train
    # together or not at all).
    lock = exclusive_lock(path.with_suffix(".lock"), ctx.log) if distributed.is_main_process() else contextlib.nullcontext()
    with lock:
        note = _load_or_train(ctx, path, model, train)
    note = {"key": key, "recipe_key": recipe_key, "data_sha256": data_sha256, "recipe": recipe, **note}
    model.eval()
    ctx.extra["base_model"] = note
    return model


CLASSIFIERS = ("linear", "cosine")


def cross_entropy_recipe(backbone: str, sgd: SGDRecipe, classes: int, init: dict[str, Any] | None = None,
                         classifier: str = "linear", scale: float = 16.0, benchmark_views: bool = False) -> dict[str, Any]:
    """The recipe (cache key material) of :func:`cross_entropy_base_model` for ``classes`` base
    classes; ``init`` is the backbone initialisation's identity (:attr:`BackboneInit.identity`)."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown base classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    head = {"classifier": "cosine", "scale": scale} if classifier == "cosine" else {}
    return {"kind": "cross-entropy", "backbone": backbone, "sgd": recipe_key(sgd), "classes": classes,
            **(init or {}), **head, **({"views": None} if benchmark_views else {})}


def cross_entropy_recipe_for(ctx: Context, backbone: str, sgd: SGDRecipe, pretrained: str | None = None,
                             frozen_stages: int = -1, classifier: str = "linear", scale: float = 16.0,
                             benchmark_views: bool = False) -> dict[str, Any]:
    """The recipe :func:`cross_entropy_base_model` trains under the same arguments (for a method's
    ``base_model_recipes``)."""
    init = backbone_init(ctx, backbone, pretrained, frozen_stages)
    return cross_entropy_recipe(backbone, sgd, ctx.benchmark.num_base_classes, init.identity, classifier, scale,
                                benchmark_views)


def cross_entropy_base_model(session: Session, ctx: Context, backbone: str, sgd: SGDRecipe,
                             pretrained: str | None = None, frozen_stages: int = -1, classifier: str = "linear",
                             scale: float = 16.0, benchmark_views: bool = False) -> BackboneWithHead | BackboneWithCosineHead:
    """The standard base model: ``backbone`` + a classifier trained with cross-entropy on the
    base session, shared (through the cache) by every method with the same settings. The
    classifier is linear, or ``"cosine"`` (``scale * cos``, CEC's decoupled-cosine base,
    :class:`~fscil_bench.toolkit.heads.BackboneWithCosineHead`). The backbone starts from
    scratch, or from ``pretrained`` weights with ``frozen_stages`` frozen
    (:func:`fscil_bench.toolkit.backbones.backbone_init`). It is trained through the method's own
    views, or through the benchmark's (``benchmark_views``: the model that every method without
    views of its own shares)."""
    init = backbone_init(ctx, backbone, pretrained, frozen_stages)
    recipe = cross_entropy_recipe(backbone, sgd, session.num_seen, init.identity, classifier, scale, benchmark_views)
    generator = torch.Generator().manual_seed(ctx.stage_seed("base-data", stable_hash(recipe)))
    data = session.train.with_benchmark_transforms() if benchmark_views else session.train

    def build() -> nn.Module:
        if classifier == "cosine":
            return BackboneWithCosineHead(init.build(), session.num_seen, scale)
        return BackboneWithHead(init.build(), session.num_seen)

    def train(model: nn.Module) -> None:
        train_supervised(model, data, F.cross_entropy, sgd, ctx, desc="base session", generator=generator,
                         predict=model)

    return cached_model(ctx, recipe, build, train, data=data)


def warm_start_recipe(ctx: Context, backbone: str, sgd: SGDRecipe) -> dict[str, Any]:
    """The recipe of :func:`warm_start_weights` (for a method's ``base_model_recipes``)."""
    return cross_entropy_recipe_for(ctx, backbone, sgd, benchmark_views=True)


def warm_start_weights(session: Session, ctx: Context, backbone: str,
                       sgd: SGDRecipe | None) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """The backbone weights of the shared cross-entropy base model of ``sgd``, trained from
    scratch through the benchmark's own transforms whatever the asking method's views, and its
    recipe: where a method that trains its own base model starts from (``quick`` presets).
    ``(None, None)`` when ``sgd`` is None (no warm start)."""
    if sgd is None:
        return None, None
    model = cross_entropy_base_model(session, ctx, backbone, sgd, benchmark_views=True)
    return model.backbone.state_dict(), ctx.extra.pop("base_model")["recipe"]


#: The base recipe of the ``quick`` presets (CPU, minutes): shared so those methods train it once
#: (why lr 0.05 with a one-epoch warm-up: NOTES.md).
QUICK_BACKBONE = "convnet4-small"
QUICK_BASE_SGD = SGDRecipe(epochs=4, lr=0.05, batch_size=128, warmup_epochs=1.0)

#: The base recipe of the ``smoke`` presets: seconds on a tiny benchmark, for tests and plumbing checks.
SMOKE_BASE_SGD = SGDRecipe(epochs=2, lr=0.05, batch_size=16)
#: A smoke preset's incremental-session recipe (one epoch of small batches).
SMOKE_SESSION_SGD = SGDRecipe(epochs=1, lr=0.01, batch_size=8, schedule="constant")
