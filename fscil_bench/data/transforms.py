"""Batched image transforms on uint8 tensors: the benchmarks' standard transforms.

Every transform takes a batch of uint8 images shaped ``(B, H, W, 3)`` (on any device) and
returns float images ``(B, 3, h, w)`` normalised with the dataset's mean and std. Augmentations
draw from an explicit ``torch.Generator`` so a seeded run is reproducible. Working on whole
batches (instead of one PIL image at a time) keeps the data path cheap and lets it run on the
accelerator.

Random numbers are always drawn on the CPU from the caller's generator (so a seeded run draws
the same augmentation on every device) and copied to the images' device without waiting
(``non_blocking``): a transform never makes the host wait for the device.

The operations of the published training recipes (torchvision's resized crop with its ten tries,
colour jitter, grayscale, bicubic resizing) and the :class:`~fscil_bench.data.augment.Pipeline`
that composes them are in :mod:`fscil_bench.data.augment`; batch Mixup and CutMix in
:mod:`fscil_bench.data.mixing`; the named views methods declare in :mod:`fscil_bench.data.views`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of images scaled to [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def to_float(images: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, H, W)``."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = _on(torch.tensor(norm.mean).view(1, 3, 1, 1), x.device)
    std = _on(torch.tensor(norm.std).view(1, 3, 1, 1), x.device)
    return x.sub_(mean).div_(std)


def _on(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy host-made ``values`` to ``device`` without a host synchronisation (no-op on the CPU)."""
    return values.to(device, non_blocking=True)


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return _on(torch.rand(n, generator=generator, device="cpu"), device)


def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _uniform(x.shape[0], generator, x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(x: torch.Tensor, size: int, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels and crop a random ``size`` x ``size`` window per image."""
    b = x.shape[0]
    padded = F.pad(x, (padding,) * 4)
    span = padded.shape[-1] - size + 1
    offsets = _on(torch.randint(0, span, (b, 2), generator=generator), x.device)
    rows = offsets[:, 0].view(b, 1) + torch.arange(size, device=x.device).view(1, size)
    cols = offsets[:, 1].view(b, 1) + torch.arange(size, device=x.device).view(1, size)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # Gather (B, C, size, size) with advanced indexing on the two spatial axes.
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, size, 1), cols.view(b, 1, size)]
    return out.permute(0, 3, 1, 2)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random box of area ``scale`` and aspect ``ratio`` per image and resize it to ``size``
    (bilinear, sampled at continuous positions), for a whole batch at once.

    This is the crop of the standard mini and CUB transforms (their benchmark version 1). It
    approximates torchvision's RandomResizedCrop: a box too wide or tall for the image is clamped
    instead of drawn again, the box is not rounded to whole pixels and there is no antialiasing.
    :class:`fscil_bench.data.augment.RandomResizedCrop` follows torchvision's sampling exactly."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale, generator=generator)
    low, high = torch.log(torch.tensor(ratio)).tolist()  # float32 logs, as the bounds always were
    log_ratio = torch.empty(b).uniform_(low, high, generator=generator)
    aspect = torch.exp(log_ratio)
    cw = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the width
    ch = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * (1 - cw)) + cw / 2
    cy = (torch.rand(b, generator=generator) * (1 - ch)) + ch / 2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cw
    theta[:, 0, 2] = cx * 2 - 1
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = cy * 2 - 1
    grid = F.affine_grid(_on(theta, x.device), (b, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size`` (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    if h <= w:
        new = (size, max(1, round(w * size / h)))
    else:
        new = (max(1, round(h * size / w)), size)
    return F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


@dataclass(frozen=True)
class CropFlip:
    """CIFAR-style training augmentation: pad-and-crop plus horizontal flip (``flip=False``
    for data where a mirror image is another class, such as characters)."""

    norm: Normalization
    size: int = 32
    padding: int = 4
    flip: bool = True

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = random_crop(to_float(images, self.norm), self.size, self.padding, generator)
        return random_flip(x, generator) if self.flip else x


@dataclass(frozen=True)
class ResizedCropFlip:
    """ImageNet-style training augmentation: random resized crop plus horizontal flip."""

    norm: Normalization
    size: int

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(images, self.norm)
        return random_flip(random_resized_crop(x, self.size, generator), generator)


@dataclass(frozen=True)
class Evaluate:
    """Test-time transform: optional resize of the shorter side and centre crop, then normalise."""

    norm: Normalization
    resize_to: int | None = None
    crop: int | None = None

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(images, self.norm)
        if self.resize_to is not None and min(x.shape[-2:]) != self.resize_to:
            x = resize(x, self.resize_to)
        if self.crop is not None:
            x = center_crop(x, self.crop)
        return x
