"""Training images a method keeps from past sessions, and per-class subsampling.

:class:`ImageBank` holds the raw (uint8) training images a method chose to keep - iCaRL's
exemplars, the joint-training oracle's whole history - and hands them back as
:class:`~fscil_bench.data.arrays.LabelledImages` with the benchmark's transforms, so they train
exactly like a session's own samples. Whatever a bank holds must be declared in ``memory()``;
``len(bank)`` and ``bank.nbytes`` are the numbers to declare.

:func:`subsample_per_class` picks a fixed, seeded number of samples per class (a herding pool, a
feature pool, a base experience handed to another library).
"""

from __future__ import annotations

import numpy as np
import torch

from fscil_bench.data.arrays import BatchTransform, ImageArray, LabelledImages


def subsample_per_class(labels: torch.Tensor, per_class: int | None, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of at most ``per_class`` random samples of every class in ``labels``
    (all samples when ``per_class`` is None or a class has fewer)."""
    if per_class is None:
        return torch.arange(len(labels))
    picked = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) > per_class:
            idx = idx[torch.randperm(len(idx), generator=generator)[:per_class]]
        picked.append(idx)
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.long)


def labelled_images(images: torch.Tensor, labels: torch.Tensor, like: LabelledImages) -> LabelledImages:
    """uint8 ``(N, H, W, 3)`` ``images`` and their ``labels`` with the transforms of ``like`` (its
    current ones and its :attr:`~LabelledImages.benchmark_transforms`)."""
    out = LabelledImages(
        ImageArray(np.ascontiguousarray(images.numpy()), labels.numpy().astype(np.int64)),
        like.train_transform,
        like.eval_transform,
    )
    out.benchmark_transforms = like.benchmark_transforms
    return out


class ImageBank:
    """Raw training images kept by a method, with their labels."""

    def __init__(self) -> None:
        self.images = torch.zeros(0, 0, 0, 3, dtype=torch.uint8)
        self.labels = torch.zeros(0, dtype=torch.long)
        self.train_transform: BatchTransform | None = None
        self.eval_transform: BatchTransform | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return int(self.images.numel() * self.images.element_size())

    def add(self, data: LabelledImages, indices: torch.Tensor | None = None) -> None:
        """Keep the samples ``indices`` of ``data`` (all of them by default)."""
        images, labels = data.raw_images, data.labels
        if indices is not None:
            images, labels = images[indices], labels[indices]
        self.images = images.clone() if len(self) == 0 else torch.cat([self.images, images])
        self.labels = torch.cat([self.labels, labels.to(torch.long)])
        self.train_transform, self.eval_transform = data.train_transform, data.eval_transform

    def counts(self) -> dict[int, int]:
        """Kept samples per class."""
        values, counts = torch.unique(self.labels, return_counts=True)
        return dict(zip(values.tolist(), counts.tolist()))

    def as_labelled(self, indices: torch.Tensor | None = None) -> LabelledImages:
        """The kept samples (or ``indices`` of them, repeats allowed) as a training set."""
        if self.train_transform is None or self.eval_transform is None:
            raise ValueError("the bank is empty")
        images, labels = (self.images, self.labels) if indices is None else (self.images[indices], self.labels[indices])
        return LabelledImages(
            ImageArray(np.ascontiguousarray(images.numpy()), labels.numpy().astype(np.int64)),
            self.train_transform,
            self.eval_transform,
        )

    def class_balanced_indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` indices drawn so every kept class gets the same share (within one sample); a
        class's own samples are drawn without replacement while they last, then reused."""
        classes = torch.unique(self.labels)
        share = torch.full((len(classes),), n // len(classes), dtype=torch.long)
        share[torch.randperm(len(classes), generator=generator)[: n % len(classes)]] += 1
        picked = []
        for c, k in zip(classes.tolist(), share.tolist()):
            idx = torch.nonzero(self.labels == c).flatten()
            reps = -(-k // len(idx))
            order = torch.cat([idx[torch.randperm(len(idx), generator=generator)] for _ in range(max(reps, 1))])
            picked.append(order[:k])
        out = torch.cat(picked)
        return out[torch.randperm(len(out), generator=generator)]
