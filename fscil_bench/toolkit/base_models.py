"""Base-session models cached by a hash of their recipe.

Methods that share a base recipe (same backbone, data, hyperparameters and seed) train it once:
the first trains and saves it, the others load it. The key covers the benchmark id, the seed,
the recipe and ``BASE_CODE_VERSION`` (bumped when the training code changes what it produces).
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


def cached_model(
    ctx: Context,
    recipe: dict[str, Any],
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], None],
) -> nn.Module:
    """Return the model of ``recipe``, trained by ``train`` on first use and loaded afterwards.

    ``build`` is called under a seed derived from the recipe, so every method asking for the
    same recipe starts from the same initial weights. The key also holds the method's own views
    (``ctx.views``) when it has any. Cache use is noted in ``ctx.extra``.
    """
    views = {"views": ctx.views} if ctx.views else {}  # a method's own views train another model
    key = stable_hash({"benchmark": ctx.benchmark.id, "seed": ctx.seed, "recipe": recipe, "code": BASE_CODE_VERSION,
                       **views})
    path = ctx.cache_dir / "base_models" / f"{key}.pt"
    torch.manual_seed(ctx.stage_seed("base-init", key))
    model = build().to(ctx.device)
    # Another process of a parallel run (a worker, an array task) may be training this very model:
    # the lock makes it wait and then load it, instead of training it a second time. Under
    # torchrun only rank 0 takes the lock and decides hit or miss for all ranks (they must train
    # together or not at all).
    lock = exclusive_lock(path.with_suffix(".lock"), ctx.log) if distributed.is_main_process() else contextlib.nullcontext()
    with lock:
        note = _load_or_train(ctx, path, model, train)
    note = {"key": key, "recipe": recipe, **note}
    model.eval()
    ctx.extra["base_model"] = note
    return model


CLASSIFIERS = ("linear", "cosine")


def cross_entropy_base_model(session: Session, ctx: Context, backbone: str, sgd: SGDRecipe,
                             pretrained: str | None = None, frozen_stages: int = -1, classifier: str = "linear",
                             scale: float = 16.0) -> BackboneWithHead | BackboneWithCosineHead:
    """The standard base model: ``backbone`` + a classifier trained with cross-entropy on the
    base session, shared (through the cache) by every method with the same settings. The
    classifier is linear, or ``"cosine"`` (``scale * cos``, CEC's decoupled-cosine base,
    :class:`~fscil_bench.toolkit.heads.BackboneWithCosineHead`). The backbone starts from
    scratch, or from ``pretrained`` weights with ``frozen_stages`` frozen
    (:func:`fscil_bench.toolkit.backbones.backbone_init`)."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown base classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    init = backbone_init(ctx, backbone, pretrained, frozen_stages)
    head = {"classifier": "cosine", "scale": scale} if classifier == "cosine" else {}
    recipe = {"kind": "cross-entropy", "backbone": backbone, "sgd": recipe_key(sgd), "classes": session.num_seen,
              **init.identity, **head}
    generator = torch.Generator().manual_seed(ctx.stage_seed("base-data", stable_hash(recipe)))

    def build() -> nn.Module:
        if classifier == "cosine":
            return BackboneWithCosineHead(init.build(), session.num_seen, scale)
        return BackboneWithHead(init.build(), session.num_seen)

    def train(model: nn.Module) -> None:
        train_supervised(model, session.train, F.cross_entropy, sgd, ctx, desc="base session", generator=generator,
                         predict=model)

    return cached_model(ctx, recipe, build, train)


#: The base recipe of the ``quick`` presets (CPU, minutes): shared so those methods train it once
#: (why lr 0.05 with a one-epoch warm-up: NOTES.md).
QUICK_BACKBONE = "convnet4-small"
QUICK_BASE_SGD = SGDRecipe(epochs=4, lr=0.05, batch_size=128, warmup_epochs=1.0)

#: The base recipe of the ``smoke`` presets: seconds on a tiny benchmark, for tests and plumbing checks.
SMOKE_BASE_SGD = SGDRecipe(epochs=2, lr=0.05, batch_size=16)
#: A smoke preset's incremental-session recipe (one epoch of small batches).
SMOKE_SESSION_SGD = SGDRecipe(epochs=1, lr=0.01, batch_size=8, schedule="constant")
