"""Training and feature-extraction helpers every method wants.

``train_supervised`` runs SGD with momentum, linear warm-up and cosine decay over a session's
training set; ``train_on_features`` does the same over precomputed features; ``extract_features``
runs a frozen network over a set in evaluation mode;
``class_means`` averages features per class.

On a CUDA device ``train_supervised`` takes the fast paths of :class:`DevicePaths` (bf16
autocast, channels-last memory format, pinned host memory) and ``extract_features`` copies
through pinned memory; on the CPU both default to plain float32 and pageable memory. The
training loop never reads a value back to the host inside an epoch: the loss is summed on the
device and read once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .data.arrays import LabelledImages, pin_by_default
from .protocol import Context

#: Set to 0 or 1 to force bf16 autocast off or on in training (default: on for CUDA only).
BF16_ENV = "FSCIL_BENCH_BF16"


@dataclass(frozen=True)
class DevicePaths:
    """Speed settings of the training loop; ``None`` picks the device's default.

    Attributes:
        bf16: run the forward pass and loss under ``torch.autocast`` with bfloat16 (weights,
            gradients and the optimiser stay float32; no loss scaling is needed for bf16).
            Default: on for CUDA, off on the CPU; the environment variable ``FSCIL_BENCH_BF16``
            (0 or 1) overrides the default.
        channels_last: convert the model and its inputs to the channels-last memory format
            (faster convolutions on tensor cores). Default: on for CUDA.
        pin_memory: copy batches to the device through pinned host memory, without waiting.
            Default: on for CUDA.
    """

    bf16: bool | None = None
    channels_last: bool | None = None
    pin_memory: bool | None = None

    def resolve(self, device: torch.device | str) -> DevicePaths:
        """These settings with every ``None`` replaced by ``device``'s default."""
        cuda = torch.device(device).type == "cuda"
        bf16 = self.bf16
        if bf16 is None:
            env = os.environ.get(BF16_ENV, "").strip()
            if env not in ("", "0", "1"):
                raise ValueError(f"{BF16_ENV} must be 0 or 1, not {env!r}")
            bf16 = cuda if env == "" else env == "1"
        return DevicePaths(
            bf16=bf16,
            channels_last=cuda if self.channels_last is None else self.channels_last,
            pin_memory=pin_by_default(device) if self.pin_memory is None else self.pin_memory,
        )


@dataclass(frozen=True)
class SGDRecipe:
    """An SGD schedule.

    Attributes:
        epochs: passes over the training set.
        lr: peak learning rate (after warm-up).
        batch_size: samples per step (the last, smaller batch is dropped when the set is larger
            than one batch, so BatchNorm never sees a batch of one).
        momentum, weight_decay: SGD settings.
        warmup_epochs: linear warm-up length, in epochs (fractions allowed).
        schedule: "cosine" (decay to 0 over all steps), "step" (multiply by ``gamma`` at each of
            ``milestones``) or "constant".
        milestones: epochs (fractions allowed) at which the "step" schedule decays the rate.
        gamma: the "step" schedule's decay factor.
    """

    epochs: int
    lr: float
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    schedule: str = "cosine"
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1


def lr_at(step: int, total: int, warmup: int, recipe: SGDRecipe) -> float:
    """Learning rate at ``step`` of ``total``: linear warm-up over ``warmup`` steps, then the schedule."""
    if warmup and step < warmup:
        return recipe.lr * (step + 1) / warmup
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "step":
        epoch = step * recipe.epochs / max(1, total)
        return recipe.lr * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule != "cosine":
        raise ValueError(f"unknown schedule {recipe.schedule!r}")
    progress = (step - warmup) / max(1, total - warmup)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_supervised(
    model: nn.Module,
    data: LabelledImages,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    recipe: SGDRecipe,
    ctx: Context,
    desc: str,
    params: list[nn.Parameter] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    paths: DevicePaths | None = None,
) -> list[float]:
    """Train ``model`` (or only ``params``) on ``data`` with augmentation; return per-epoch mean loss.

    ``forward`` maps a batch of images to what ``loss_fn`` takes with the labels (default: the
    model itself); ``generator`` orders and augments the batches (default: ``ctx.generator``);
    ``paths`` picks the device fast paths (default: the device's, see :class:`DevicePaths`).
    When bf16 is used, ``ctx.extra["training_precision"]`` says so in the run's record.
    """
    generator = generator or ctx.generator
    forward = forward or model
    paths = (paths or DevicePaths()).resolve(ctx.device)
    if paths.bf16:
        ctx.extra["training_precision"] = "bf16 autocast"
    if paths.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    # Under torchrun: DDP averages gradients, each rank trains on its slice of every global batch.
    parallel, scale = distributed.is_data_parallel(), 1.0
    if parallel:
        forward = distributed.wrap_model(model, None if forward is model else forward, ctx.device)
    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    drop_last = len(data) > recipe.batch_size
    steps_per_epoch = data.num_batches(recipe.batch_size, drop_last=drop_last)
    total = steps_per_epoch * recipe.epochs
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    model.train()
    step, history = 0, []
    bar = ctx.progress(range(recipe.epochs), desc=desc, total=recipe.epochs)
    with distributed.rank_rng(ctx.stage_seed("train-rank", desc), ctx.device):  # per-rank dropout etc.; restored after
        for _ in bar:
            running, seen = torch.zeros((), device=ctx.device), 0
            for x, y in data.batches(recipe.batch_size, augment=True, shuffle=True, generator=generator,
                                     device=ctx.device, drop_last=drop_last, pin_memory=paths.pin_memory):
                if parallel:
                    part, scale = distributed.local_part(len(y))
                    x, y = x[part], y[part]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, warmup, recipe)
                if paths.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16) if paths.bf16 else contextlib.nullcontext():
                    loss = loss_fn(forward(x), y)
                opt.zero_grad(set_to_none=True)
                (loss * scale).backward()
                opt.step()
                # Accumulate on the device: no host synchronisation per step.
                running += loss.detach().float() * len(y)
                seen += len(y)
                step += 1
            history.append(distributed.pooled_mean(running, seen))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{history[-1]:.3f}")
    if parallel:
        distributed.sync_buffers(model)
    model.eval()
    return history


def train_on_features(
    modules: list[nn.Module],
    features: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    recipe: SGDRecipe,
    ctx: Context,
    desc: str,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train ``modules`` on precomputed ``features`` (one row per sample) with ``recipe``'s SGD,
    warm-up and schedule; return the per-epoch mean loss.

    ``loss_fn(batch_features, batch_labels)`` runs the modules and returns the loss. The rows are
    shuffled every epoch by ``generator`` (default: ``ctx.generator``); there is no augmentation,
    so this is the cheap stage after a frozen network whose features were computed once.
    """
    generator = generator or ctx.generator
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    n = len(features)
    drop_last = n > recipe.batch_size
    steps_per_epoch = n // recipe.batch_size if drop_last else 1
    total = steps_per_epoch * recipe.epochs
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    for m in modules:
        m.train()
    step, history = 0, []
    for _ in ctx.progress(range(recipe.epochs), desc=desc, total=recipe.epochs):
        order = torch.randperm(n, generator=generator).to(features.device)
        running, seen = torch.zeros((), device=features.device), 0
        for b in range(steps_per_epoch):
            rows = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, recipe)
            loss = loss_fn(features[rows], labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach().float() * len(rows)
            seen += len(rows)
            step += 1
        history.append(float(running) / seen)
    for m in modules:
        m.eval()
    return history


@torch.no_grad()
def extract_features(
    network: Callable[[torch.Tensor], torch.Tensor], data: LabelledImages, ctx: Context, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every sample of ``data`` under the test-time transform, and their labels."""
    if isinstance(network, nn.Module):
        network.eval()
    feats, labels = [], []
    for x, y in data.batches(batch_size, augment=False, device=ctx.device):
        feats.append(network(x))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def class_means(features: torch.Tensor, labels: torch.Tensor, classes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Row ``i`` is the mean feature of class ``classes[i]``."""
    rows = []
    for c in classes:
        mask = labels == c
        if not mask.any():
            raise ValueError(f"no sample of class {c} to average")
        rows.append(features[mask].mean(0))
    return torch.stack(rows)


def cosine_logits(features: torch.Tensor, weights: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * cos(feature_i, weight_c)`` for every sample i and class c."""
    return scale * F.normalize(features, dim=1) @ F.normalize(weights, dim=1).T
