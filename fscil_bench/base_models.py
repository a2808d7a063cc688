"""Base-session models cached by a hash of their recipe.

Methods that share a base recipe (same backbone, data, hyperparameters and seed) train it once:
the first trains and saves it, the others load it. The key covers the benchmark id, the seed,
the recipe and ``BASE_CODE_VERSION`` (bumped when the training code changes what it produces).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .data.cache import atomic_write_bytes, exclusive_lock, sha256_file, stable_hash
from .models import build_backbone
from .protocol import Context, Session
from .training import SGDRecipe, train_supervised

BASE_CODE_VERSION = 1


def _verified_state(path: Path) -> dict[str, Any] | None:
    sidecar = path.with_suffix(".sha256")
    if not path.exists() or not sidecar.exists() or sha256_file(path) != sidecar.read_text().strip():
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
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_bytes(path.with_suffix(".sha256"), (sha256_file(path) + "\n").encode())
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
    same recipe starts from the same initial weights. Cache use is noted in ``ctx.extra``.
    """
    key = stable_hash({"benchmark": ctx.benchmark.id, "seed": ctx.seed, "recipe": recipe, "code": BASE_CODE_VERSION})
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


class BackboneWithHead(nn.Module):
    """A backbone followed by a linear classifier over ``num_classes`` classes."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class LinearHeadOutputs:
    """``classify`` and ``classifier_weights`` for a method whose ``self.model`` is a
    :class:`BackboneWithHead`: the logits are the linear head's, its weight rows the classifier
    vectors (the method supplies ``embed``)."""

    model: BackboneWithHead

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)

    def classifier_weights(self) -> torch.Tensor:
        return self.model.head.weight.detach()


def cross_entropy_base_model(session: Session, ctx: Context, backbone: str, sgd: SGDRecipe) -> BackboneWithHead:
    """The standard base model: ``backbone`` + linear head trained with cross-entropy on the
    base session, shared (through the cache) by every method with the same settings."""
    recipe = {"kind": "cross-entropy", "backbone": backbone, "sgd": dataclasses.asdict(sgd), "classes": session.num_seen}
    generator = torch.Generator().manual_seed(ctx.stage_seed("base-data", stable_hash(recipe)))

    def train(model: nn.Module) -> None:
        train_supervised(model, session.train, F.cross_entropy, sgd, ctx, desc="base session", generator=generator)

    return cached_model(ctx, recipe, lambda: BackboneWithHead(build_backbone(backbone), session.num_seen), train)


#: The base recipe of the ``quick`` presets (CPU, minutes): shared so those methods train it once.
#: lr 0.05 with a one-epoch warm-up: at lr 0.1 with half an epoch, one seed in three ended at 54%
#: base accuracy instead of about 80% on glyphs100.
QUICK_BACKBONE = "convnet4-small"
QUICK_BASE_SGD = SGDRecipe(epochs=4, lr=0.05, batch_size=128, warmup_epochs=1.0)
