"""In-memory image sets and their batch iterators.

Every benchmark is held as decoded uint8 arrays (``(N, H, W, 3)``, possibly memory-mapped) plus
integer labels. A :class:`LabelledImages` is what a method receives for one session: only that
session's samples, with the benchmark's train and test transforms attached.

Batches go to the device as uint8 (a quarter of the bytes of float) and are transformed there.
For a CUDA device each batch is gathered into pinned (page-locked) host memory and copied with
``non_blocking=True``, so the host queues the copy and goes on without waiting for it.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

BatchTransform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def pin_by_default(device: torch.device | str) -> bool:
    """Whether host->device copies to ``device`` go through pinned memory: only for CUDA."""
    return torch.device(device).type == "cuda"


def to_device(rows: torch.Tensor, device: torch.device | str, pin_memory: bool) -> torch.Tensor:
    """``rows`` (a host tensor) on ``device``; copied through pinned memory, without waiting for
    the copy, when ``pin_memory``. The values are identical either way."""
    if pin_memory:
        return rows.pin_memory().to(device, non_blocking=True)
    return rows.to(device)


@dataclass(frozen=True)
class ImageArray:
    """Decoded images and their global class ids.

    Attributes:
        images: uint8 array ``(N, H, W, 3)``.
        labels: int64 array ``(N,)``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> ImageArray:
        """A copy holding only ``indices`` (a copy, so it shares no memory with the pool)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageArray(np.ascontiguousarray(self.images[idx]), np.asarray(self.labels[idx], dtype=np.int64).copy())


class LabelledImages:
    """A session's training samples with batch iterators that apply the benchmark's transforms.

    ``batches(augment=True)`` yields augmented training batches; ``batches(augment=False)``
    yields the test-time view of the same images (for feature extraction or class means).
    """

    def __init__(self, data: ImageArray, train_transform: BatchTransform, eval_transform: BatchTransform):
        self._images = torch.from_numpy(data.images)
        self._labels = torch.from_numpy(data.labels)
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        #: The transforms the samples were made with (the benchmark's): a method's own views
        #: replace ``train_transform`` and ``eval_transform``, not these.
        self.benchmark_transforms = (train_transform, eval_transform)

    def __len__(self) -> int:
        return len(self._labels)

    def with_benchmark_transforms(self) -> LabelledImages:
        """The same samples (shared, not copied) through :attr:`benchmark_transforms`."""
        other = copy.copy(self)
        other.train_transform, other.eval_transform = self.benchmark_transforms
        return other

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    @property
    def raw_images(self) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` images before any transform."""
        return self._images

    def classes(self) -> list[int]:
        return sorted(set(self._labels.tolist()))

    def digest(self) -> str:
        """sha256 of the images' shape, the raw images (uint8, row-major) and the labels (int64):
        what keys every cache entry derived from these samples."""
        digest = hashlib.sha256(repr(tuple(self._images.shape)).encode())
        digest.update(np.ascontiguousarray(self._images.numpy()))
        digest.update(np.ascontiguousarray(self._labels.to(torch.int64).numpy()))
        return digest.hexdigest()

    def batches(
        self,
        batch_size: int,
        *,
        augment: bool,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        pin_memory: bool | None = None,
        repeat: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)`` on ``device``; images transformed (on ``device``) and
        normalised. ``pin_memory`` (default: for CUDA devices) stages each copy in pinned memory.
        ``repeat`` walks ``repeat`` copies of the set in one (shuffled) order (mmcv's ``RepeatDataset``)."""
        n = len(self) * repeat
        pin = pin_by_default(device) if pin_memory is None else pin_memory
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if repeat > 1:
            order = order % len(self)
        transform = self.train_transform if augment else self.eval_transform
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            raw = to_device(self._images[idx], device, pin)
            yield transform(raw, generator), to_device(self._labels[idx], device, pin)

    def num_batches(self, batch_size: int, drop_last: bool = False, repeat: int = 1) -> int:
        n = len(self) * repeat
        return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


def iterate_images(
    images: np.ndarray,
    transform: BatchTransform,
    batch_size: int,
    device: torch.device | str,
    indices: np.ndarray | None = None,
    pin_memory: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Yield transformed batches of a uint8 ``(N, H, W, 3)`` array (or of its rows ``indices``),
    in order. Only one batch is copied at a time, so memory-mapped sets stay on disk.
    ``pin_memory`` (default: for CUDA devices) stages each copy in pinned memory."""
    pin = pin_by_default(device) if pin_memory is None else pin_memory
    rows = np.arange(len(images)) if indices is None else np.asarray(indices)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        block = images[chunk[0] : chunk[-1] + 1] if len(chunk) and chunk[-1] - chunk[0] + 1 == len(chunk) else images[chunk]
        raw = to_device(torch.from_numpy(np.ascontiguousarray(block)), device, pin)
        yield transform(raw, None)
