"""The training core: one optimisation loop, the recipes that drive it, and its three front ends.

* :class:`SGDRecipe` (epochs over a data set) and :class:`StepRecipe` (a number of steps) hold
  the optimiser settings and the learning-rate schedule of :mod:`fscil_bench.toolkit.lr_schedule`.
* :class:`OptimisationLoop` is the one loop: each :meth:`~OptimisationLoop.step` sets the learning
  rate of the step, back-propagates a loss and updates; the loss is summed on the device and read
  once per epoch (no host synchronisation per step).
* :func:`train_supervised` trains a network on images with the benchmark's augmentation (and on
  several processes under ``torchrun``); :func:`train_on_features` trains small modules on
  precomputed features. Methods with their own batches (episodes, pools of kept features) drive
  an :class:`OptimisationLoop` themselves.

On a CUDA device :func:`train_supervised` takes the fast paths of :class:`DevicePaths`
(channels-last memory format, pinned host memory; bf16 autocast when the run asks for it).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from fscil_bench import distributed
from fscil_bench.data.arrays import LabelledImages, pin_by_default
from fscil_bench.data.mixing import BatchMix, MixedBatch
from fscil_bench.protocol import Context
from fscil_bench.toolkit.checkpoints import CHECKPOINT_RULES, checkpoint_selection
from fscil_bench.toolkit.lr_schedule import learning_rate


@dataclass(frozen=True, kw_only=True)
class OptimiserSettings:
    """SGD's settings and the shape of the learning-rate schedule, shared by both recipes (lengths
    are in the recipe's own unit: epochs for :class:`SGDRecipe`, steps for :class:`StepRecipe`).

    Attributes:
        lr: peak learning rate (after warm-up).
        momentum, weight_decay, nesterov: SGD settings.
        schedule: "cosine", "step" (times ``gamma`` at each of ``milestones``) or "constant".
        warmup_start: the warm-up's first rate as a fraction of ``lr`` (None: ``lr / warm-up steps``).
        min_lr: the cosine schedule's final rate, as a fraction of ``lr``.
        milestones, gamma: where the "step" schedule decays the rate, and by what factor.
        cooldown_factor: the rate of the cool-down steps, as a fraction of ``lr``.
        convention: how warm-up, cosine clock and cool-down combine: ``"fscil-bench"`` or
            ``"mmcv"`` (the warm-up multiplies the scheduled rate; see
            :mod:`fscil_bench.toolkit.lr_schedule`).
        first_step: the schedule's counter at the first optimiser step (NC-FSCIL's incremental
            sessions advance their counter before setting the rate: 1).
    """

    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_start: float | None = None
    min_lr: float = 0.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    cooldown_factor: float = 0.0
    convention: str = "fscil-bench"
    first_step: int = 0


@dataclass(frozen=True)
class SGDRecipe(OptimiserSettings):
    """SGD over a data set for a number of epochs (see :class:`OptimiserSettings` for the rest).

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per step.
        warmup_epochs: linear warm-up length, in epochs (fractions allowed).
        cooldown_epochs: the last epochs, run at ``cooldown_factor * lr``.
        milestones: in epochs (fractions allowed).
        warmup_steps, cooldown_steps: the warm-up and cool-down in optimiser steps instead (used
            when above 0).
        repeat: passes per loader epoch: each loader epoch walks one shuffled order of ``repeat``
            copies of the set (mmcv's ``RepeatDataset``); ``epochs`` must be a multiple of it.
        drop_last: drop the last, smaller batch of a loader epoch. None: drop it when the set is
            larger than one batch (so BatchNorm never sees a batch of one).
        batch_mix: batch Mixup/CutMix after the augmentation (:class:`fscil_bench.data.mixing.BatchMix`).
        checkpoint: which state ends the training: ``"last"``; ``"validation"``, the best by the
            accuracy on a seeded ``validation_fraction`` of the training set held out of training,
            measured every ``checkpoint_every`` loader epochs; ``"best-on-test"``, the best by the
            test accuracy the runner measures (not protocol-clean; see :mod:`fscil_bench.toolkit.checkpoints`).
    """

    epochs: int
    batch_size: int = 128
    warmup_epochs: float = 0.0
    cooldown_epochs: float = 0.0
    warmup_steps: int = 0
    cooldown_steps: int = 0
    repeat: int = 1
    drop_last: bool | None = None
    batch_mix: BatchMix | None = None
    checkpoint: str = "last"
    checkpoint_every: int = 1
    validation_fraction: float = 0.1

    #: Fields added after cache keys were first derived from this class (see :func:`recipe_key`).
    LATER_FIELDS: ClassVar[tuple[str, ...]] = ("nesterov", "warmup_start", "min_lr", "cooldown_epochs",
                                               "cooldown_factor", "convention", "first_step", "warmup_steps",
                                               "cooldown_steps", "repeat", "drop_last", "batch_mix", "checkpoint",
                                               "checkpoint_every", "validation_fraction")

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.epochs % self.repeat:
            raise ValueError(f"epochs ({self.epochs}) must be a multiple of repeat ({self.repeat})")
        if self.checkpoint not in CHECKPOINT_RULES:
            raise ValueError(f"unknown checkpoint rule {self.checkpoint!r}; choose from {', '.join(CHECKPOINT_RULES)}")

    @property
    def loader_epochs(self) -> int:
        """Loader epochs (``epochs / repeat``)."""
        return self.epochs // self.repeat

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of ``step`` when a loader epoch has ``steps_per_epoch`` steps."""
        per_pass = steps_per_epoch / self.repeat
        warmup = self.warmup_steps or int(self.warmup_epochs * per_pass)
        cooldown = self.cooldown_steps or int(self.cooldown_epochs * per_pass)
        return learning_rate(step + self.first_step, steps_per_epoch * self.loader_epochs, self.lr, shape=self.schedule,
                             warmup=warmup, warmup_start=self.warmup_start, floor=self.min_lr,
                             milestones=self.milestones, gamma=self.gamma, units=self.epochs, cooldown=cooldown,
                             cooldown_factor=self.cooldown_factor, convention=self.convention,
                             epoch_length=steps_per_epoch, epoch_units=self.repeat)


@dataclass(frozen=True)
class StepRecipe(OptimiserSettings):
    """SGD for a fixed number of steps, on batches a method draws itself (see
    :class:`OptimiserSettings` for the rest).

    Attributes:
        steps: optimisation steps.
        batch_size: samples per step (fewer when the pool is smaller).
        warmup_steps, cooldown_steps: warm-up and cool-down lengths, in steps.
        milestones: in steps.
    """

    steps: int
    batch_size: int = 64
    warmup_steps: int = 0
    cooldown_steps: int = 0

    LATER_FIELDS: ClassVar[tuple[str, ...]] = ("convention", "first_step")

    def lr_at(self, step: int, steps: int | None = None) -> float:
        """The rate of optimiser step ``step`` (from 0) of a run of ``steps`` (default: :attr:`steps`)."""
        return learning_rate(step + self.first_step, steps or self.steps, self.lr, shape=self.schedule,
                             warmup=self.warmup_steps, warmup_start=self.warmup_start, floor=self.min_lr,
                             milestones=self.milestones, gamma=self.gamma, cooldown=self.cooldown_steps,
                             cooldown_factor=self.cooldown_factor, convention=self.convention)


def recipe_key(recipe: Any) -> dict[str, Any]:
    """The values of a recipe dataclass that identify it in cache keys: every field, except the
    fields listed in its ``LATER_FIELDS`` while they hold their defaults. A field added to a
    recipe class therefore leaves the keys of recipes that do not use it, and the models cached
    under them, unchanged; a recipe that sets it gets a key of its own."""
    later = getattr(recipe, "LATER_FIELDS", ())
    defaults = {f.name: f.default for f in dataclasses.fields(recipe)}
    return {k: v for k, v in dataclasses.asdict(recipe).items() if not (k in later and v == defaults[k])}


def sgd(params: Iterable[nn.Parameter], recipe: SGDRecipe | StepRecipe) -> torch.optim.SGD:
    """The recipe's SGD optimiser over ``params``."""
    return torch.optim.SGD(list(params), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           nesterov=recipe.nesterov)


class OptimisationLoop:
    """The one optimisation loop: learning rate per step, backward, update, loss bookkeeping.

    ``lr_at(step)`` gives each step's rate (``None`` keeps the optimiser's own). A caller computes
    a loss and hands it to :meth:`step` with the number of samples it averages over; the loop
    keeps the running sum on the device, and :meth:`end_epoch` returns the mean since the last call.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float] | None, device: torch.device):
        self.optimizer = optimizer
        self.lr_at = lr_at
        self.device = device
        self.steps_done = 0
        self._running = torch.zeros((), device=device)
        self._seen = 0

    def set_lr(self) -> None:
        """Set the current step's learning rate (before the forward pass that uses it)."""
        if self.lr_at is not None:
            rate = self.lr_at(self.steps_done)
            for group in self.optimizer.param_groups:
                group["lr"] = rate

    def step(self, loss: torch.Tensor, samples: int, scale: float = 1.0) -> None:
        """Back-propagate ``scale * loss``, update, and count ``loss`` (a mean over ``samples``)."""
        self.optimizer.zero_grad(set_to_none=True)
        (loss * scale).backward()
        self.optimizer.step()
        self._running += loss.detach().float() * samples
        self._seen += samples
        self.steps_done += 1

    def end_epoch(self, pooled: bool = False) -> float:
        """Mean loss since the last call (over every process of a data-parallel run with ``pooled``)."""
        mean = distributed.pooled_mean(self._running, self._seen) if pooled else float(self._running) / max(1, self._seen)
        self._running, self._seen = torch.zeros((), device=self.device), 0
        return mean


@dataclass(frozen=True)
class DevicePaths:
    """Speed settings of :func:`train_supervised`; ``None`` picks the run's default.

    Attributes:
        bf16: run the forward pass and loss under ``torch.autocast`` with bfloat16 (weights,
            gradients and the optimiser stay float32). Default: the run's choice
            (``ctx.bf16``, off unless ``fscil-bench run --bf16``).
        channels_last: convert the model and its inputs to the channels-last memory format
            (faster convolutions on tensor cores). Default: on for CUDA.
        pin_memory: copy batches to the device through pinned host memory, without waiting.
            Default: on for CUDA.
    """

    bf16: bool | None = None
    channels_last: bool | None = None
    pin_memory: bool | None = None

    def resolve(self, device: torch.device | str, bf16: bool = False) -> DevicePaths:
        """These settings with every ``None`` replaced by ``device``'s default (``bf16``: the run's)."""
        cuda = torch.device(device).type == "cuda"
        return DevicePaths(
            bf16=bf16 if self.bf16 is None else self.bf16,
            channels_last=cuda if self.channels_last is None else self.channels_last,
            pin_memory=pin_by_default(device) if self.pin_memory is None else self.pin_memory,
        )


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
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Train ``model`` (or only ``params``) on ``data`` with augmentation; return per-loader-epoch mean loss.

    ``forward`` maps a batch of images to what ``loss_fn`` takes with the labels (default: the
    model itself); ``generator`` orders, augments and mixes the batches (default: ``ctx.generator``);
    ``paths`` picks the device fast paths (default: the device's, see :class:`DevicePaths`).
    With ``recipe.batch_mix`` every batch is mixed after its augmentation and the loss combines
    both label sets (:meth:`fscil_bench.data.mixing.BatchMix.loss`). A ``recipe.checkpoint`` other
    than ``"last"`` needs ``predict`` (images -> logits over ``data``'s classes) to score the
    checkpoints (:func:`fscil_bench.toolkit.checkpoints.checkpoint_selection`).
    Under ``torchrun`` every rank draws the same global batch and trains on its own slice, with
    gradients averaged by ``DistributedDataParallel``. When bf16 is used,
    ``ctx.extra["training_precision"]`` says so in the run's record.
    """
    generator = generator or ctx.generator
    forward = forward or model
    paths = (paths or DevicePaths()).resolve(ctx.device, ctx.bf16)
    if paths.bf16:
        ctx.extra["training_precision"] = "bf16 autocast"
    if paths.channels_last:
        model.to(memory_format=torch.channels_last)
    data, selector = checkpoint_selection(model, data, recipe, predict, ctx, desc)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    parallel, scale = distributed.is_data_parallel(), 1.0
    if parallel:
        forward = distributed.wrap_model(model, None if forward is model else forward, ctx.device, ctx.sync_batchnorm)
    drop_last = len(data) * recipe.repeat > recipe.batch_size if recipe.drop_last is None else recipe.drop_last
    steps_per_epoch = data.num_batches(recipe.batch_size, drop_last=drop_last, repeat=recipe.repeat)
    loop = OptimisationLoop(sgd(params, recipe), lambda step: recipe.lr_at(step, steps_per_epoch), ctx.device)
    mix: BatchMix | None = recipe.batch_mix
    model.train()
    history = []
    bar = ctx.progress(range(recipe.loader_epochs), desc=desc, total=recipe.loader_epochs)
    with distributed.rank_rng(ctx.stage_seed("train-rank", desc), ctx.device):  # per-rank dropout etc.; restored after
        for epoch in bar:
            for x, y in data.batches(recipe.batch_size, augment=True, shuffle=True, generator=generator,
                                     device=ctx.device, drop_last=drop_last, pin_memory=paths.pin_memory,
                                     repeat=recipe.repeat):
                mixed = mix(x, y, generator) if mix is not None else None  # on the global batch
                if mixed is not None:
                    x = mixed.images
                if parallel:
                    part, scale = distributed.local_part(len(y))
                    x, y = x[part], y[part]
                    if mixed is not None:
                        mixed = MixedBatch(x, y, None if mixed.mixed_labels is None else mixed.mixed_labels[part],
                                           mixed.lam, mixed.kind)
                loop.set_lr()
                if paths.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16) if paths.bf16 else contextlib.nullcontext():
                    out = forward(x)
                    loss = loss_fn(out, y) if mixed is None else mix.loss(loss_fn, out, mixed)
                loop.step(loss, len(y), scale)
            history.append(loop.end_epoch(pooled=True))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{history[-1]:.3f}")
            if selector is not None:
                if parallel:
                    distributed.sync_buffers(model)
                selector.after_epoch(epoch, last=epoch == recipe.loader_epochs - 1)
    if parallel:
        distributed.sync_buffers(model)
    if selector is not None:
        selector.finish()
    model.eval()
    return history


def feature_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """One epoch of row indices over ``n`` precomputed rows: shuffled by ``generator``, batches of
    ``batch_size`` with the remainder dropped (a single full batch when ``n <= batch_size``)."""
    order = torch.randperm(n, generator=generator).to(device)
    steps = n // batch_size if n > batch_size else 1
    for b in range(steps):
        yield order[b * batch_size:(b + 1) * batch_size]


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
    n = len(features)
    steps_per_epoch = n // recipe.batch_size if n > recipe.batch_size else 1
    loop = OptimisationLoop(sgd(params, recipe), lambda step: recipe.lr_at(step, steps_per_epoch), features.device)
    for m in modules:
        m.train()
    history = []
    for _ in ctx.progress(range(recipe.epochs), desc=desc, total=recipe.epochs):
        for rows in feature_batches(n, recipe.batch_size, generator, features.device):
            loop.set_lr()
            loop.step(loss_fn(features[rows], labels[rows]), len(rows))
        history.append(loop.end_epoch())
    for m in modules:
        m.eval()
    return history
