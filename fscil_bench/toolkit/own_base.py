"""Base training that a method owns: loops over raw batches the method augments itself.

:func:`~fscil_bench.toolkit.training.train_supervised` hands a loss one augmented view per image.
Methods whose base training *is* their contribution need more: two views of every image and
mixed pairs (ALICE), a classification view plus large and small crops under several fixed
transforms (SAVC), every image under four rotations (S3C). :func:`train_on_raw_batches` gives
such a method shuffled batches of raw uint8 images and their labels, and runs the recipe's SGD
and learning-rate schedule over the loss it computes from them. :func:`base_subset` is a seeded
subset of the base set, for the short ``quick`` recipes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from fscil_bench.data.arrays import LabelledImages, pin_by_default, to_device
from fscil_bench.protocol import Context
from fscil_bench.toolkit.exemplars import labelled_images, subsample_per_class
from fscil_bench.toolkit.training import OptimisationLoop, SGDRecipe, sgd


def raw_batches(data: LabelledImages, batch_size: int, generator: torch.Generator, device: torch.device,
                drop_last: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch of ``(uint8 images (B, H, W, 3), labels)`` on ``device``; the last, smaller
    batch is dropped (``drop_last``) unless the set is a single batch."""
    n = len(data)
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n > batch_size else n
    pin = pin_by_default(device)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield to_device(data.raw_images[idx], device, pin), to_device(data.labels[idx], device, pin)


def train_on_raw_batches(
    model: nn.Module,
    data: LabelledImages,
    batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    recipe: SGDRecipe,
    ctx: Context,
    desc: str,
    generator: torch.Generator,
    params: list[nn.Parameter] | None = None,
) -> list[float]:
    """Train ``model`` (or only ``params``) with ``recipe``: every step draws a shuffled batch of raw
    images and labels from ``generator`` and minimises ``batch_loss(images, labels)``; return the
    per-epoch mean loss. The model is in training mode throughout and in evaluation mode after.
    One process, float32, no channels-last (the fast paths and data parallelism of
    :func:`~fscil_bench.toolkit.training.train_supervised` are not wired in)."""
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    drop_last = len(data) > recipe.batch_size
    steps_per_epoch = data.num_batches(recipe.batch_size, drop_last=drop_last)
    loop = OptimisationLoop(sgd(params, recipe), lambda step: recipe.lr_at(step, steps_per_epoch), ctx.device)
    model.train()
    history = []
    bar = ctx.progress(range(recipe.epochs), desc=desc, total=recipe.epochs)
    for _ in bar:
        for images, labels in raw_batches(data, recipe.batch_size, generator, ctx.device, drop_last):
            loop.set_lr()
            loop.step(batch_loss(images, labels), len(labels))
        history.append(loop.end_epoch())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{history[-1]:.3f}")
    model.eval()
    return history


def base_subset(data: LabelledImages, per_class: int | None, ctx: Context) -> LabelledImages:
    """``per_class`` seeded images of every class of ``data`` (all of them when None); the pick
    depends only on the run's seed and ``per_class``."""
    if per_class is None:
        return data
    generator = torch.Generator().manual_seed(ctx.stage_seed("own-base-subset", per_class))
    picks = subsample_per_class(data.labels, per_class, generator)
    return labelled_images(data.raw_images[picks], data.labels[picks], data)
