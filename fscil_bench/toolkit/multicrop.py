"""SAVC's multi-crop views: two large crops (query and key) and small crops near the key.

Source: zysong0113/SAVC@1543c9c ``augmentations/constrained_cropping.py`` and
``dataloader/data_utils.py:32-105`` (after Van Gansbeke et al., "Revisiting Contrastive Methods for
Unsupervised Learning of Visual Representations", NeurIPS 2021). For every image:

* two large crops, each a random resized crop of the raw image (torchvision's sampler: ten tries of
  an area fraction in ``large_scale`` and an aspect ratio in ``ratio``, then the centre fallback),
  resized to ``large_size``: the first is the query, the second the key;
* ``small_count`` small crops of area fraction ``small_scale``, resized to ``small_size``. A small
  crop must overlap the key crop by at least ``min_overlap`` of its own target area (the area
  fraction times the image area, before rounding): up to ten candidates are drawn, the first that
  fits the image and overlaps enough is taken, and if none does an unconstrained crop is drawn
  instead (``constrained_cropping.py:166-196``);
* every crop is resized as an 8-bit image (bilinear, antialiased, as PIL does) and then gets the
  ``secondary`` pipeline: flip, ColorJitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale with p 0.2 and the
  normalisation.

:class:`WithCrops` is a training view that carries these crops along: called, it is the plain
classification view; a method that knows it also asks it for the crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fscil_bench.data.arrays import BatchTransform
from fscil_bench.data.augment import Pipeline, quantize, sample_crop_boxes
from fscil_bench.data.resample import crop_resize

Box = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # top, left, height, width: (B,) int64


def overlap(a: Box, b: Box) -> torch.Tensor:
    """Pixel area shared by boxes ``a`` and ``b`` (broadcast over their shapes)."""
    (ta, la, ha, wa), (tb, lb, hb, wb) = a, b
    rows = (torch.minimum(ta + ha, tb + hb) - torch.maximum(ta, tb)).clamp(min=0)
    cols = (torch.minimum(la + wa, lb + wb) - torch.maximum(la, lb)).clamp(min=0)
    return rows * cols


def constrained_crop_boxes(batch: int, height: int, width: int, scale: tuple[float, float],
                           ratio: tuple[float, float], key: Box, min_overlap: float,
                           generator: torch.Generator | None, tries: int = 10) -> Box:
    """Random resized crop boxes that overlap the ``key`` boxes by at least ``min_overlap`` of their
    target area (module docstring); rows with no such candidate get an unconstrained box."""
    u = torch.rand((batch, tries, 4), generator=generator, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * u[..., 1])
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    top = (u[..., 2] * (height - h + 1).clamp(min=1)).long()
    left = (u[..., 3] * (width - w + 1).clamp(min=1)).long()
    near = overlap((top, left, h, w), tuple(v.cpu().view(-1, 1) for v in key)) >= min_overlap * area
    ok = fits & near
    pick = ok.long().argmax(1).view(-1, 1)
    found = ok.any(1)
    fallback = sample_crop_boxes(batch, height, width, scale, ratio, generator)
    return tuple(torch.where(found, v.gather(1, pick).view(-1), f) for v, f in zip((top, left, h, w), fallback))


@dataclass(frozen=True)
class MultiCrops:
    """The crops of the module docstring; a call returns query ``(B, 3, L, L)``, key ``(B, 3, L, L)``
    and small crops ``(B, small_count, 3, S, S)``."""

    secondary: Pipeline
    large_size: int
    large_scale: tuple[float, float]
    small_size: int
    small_scale: tuple[float, float]
    small_count: int = 4
    min_overlap: float = 0.1
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def _resized(self, x: torch.Tensor, box: Box, size: int, generator: torch.Generator | None) -> torch.Tensor:
        crops = quantize(crop_resize(x, *box, (size, size), "bilinear", antialias=True))
        return self.secondary(crops.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1), generator)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        x = images.permute(0, 3, 1, 2).float().div(255)
        b, _, height, width = x.shape
        query = sample_crop_boxes(b, height, width, self.large_scale, self.ratio, generator)
        key = sample_crop_boxes(b, height, width, self.large_scale, self.ratio, generator)
        small = [constrained_crop_boxes(b, height, width, self.small_scale, self.ratio, key, self.min_overlap, generator)
                 for _ in range(self.small_count)]
        small_box = tuple(torch.stack([s[i] for s in small], 1).flatten() for i in range(4))  # image-major
        return (self._resized(x, query, self.large_size, generator), self._resized(x, key, self.large_size, generator),
                self._resized(x.repeat_interleave(self.small_count, 0), small_box, self.small_size, generator)
                .view(b, self.small_count, 3, self.small_size, self.small_size))


@dataclass(frozen=True)
class WithCrops:
    """A training view that carries :class:`MultiCrops`: calling it gives ``view``'s images."""

    view: BatchTransform
    crops: MultiCrops

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.view(images, generator)
