"""Batched augmentation operations and the :class:`Pipeline` that composes them into a view.

Every operation takes float images ``(B, 3, H, W)`` with values in [0, 1] (before normalisation)
and a ``torch.Generator``, and draws its random numbers per image, on the CPU, from that
generator (so a seeded run draws the same augmentation on every device; only the few parameters
travel to the images' device, without making the host wait). A :class:`Pipeline` turns uint8
images ``(B, H, W, 3)`` into normalised float images through a list of operations; it is a
:data:`~fscil_bench.data.arrays.BatchTransform`, so a benchmark or a method view can use it.

Why not kornia or torchvision's ``transforms.v2``: neither draws from a caller's generator
(both use the global random state), ``transforms.v2`` draws one set of parameters per call
(the same crop for the whole batch), and kornia's resized crop does not follow torchvision's
sampling (ten tries, then a centre crop). The operations below follow the published samplers:

* :class:`RandomResizedCrop`: torchvision's ``RandomResizedCrop.get_params`` (which mmcls's
  ``RandomResizedCrop`` also follows): up to ten tries of an area fraction ``~ U(scale)`` and an
  aspect ratio ``exp(U(log r0, log r1))``, ``w = round(sqrt(A a))``, ``h = round(sqrt(A / a))``;
  the first try that fits gives the box, with its corner uniform over the integer positions;
  if none fits, the centre crop of the whole image with its aspect clamped to ``[r0, r1]``.
  The box is resized with :func:`fscil_bench.data.resample.crop_resize`.
* :class:`ColorJitter`: torchvision's: factors ``~ U(max(0, 1 - v), 1 + v)`` for brightness,
  contrast and saturation, a hue shift ``~ U(-v, v)``, and the four adjustments applied in a
  random order per image; brightness blends with black, contrast with the mean grey level,
  saturation with the grey image, each clipped to [0, 1].
* :class:`RandomGrayscale`, :class:`HorizontalFlip`, :class:`RandomCrop` (zero padding),
  :class:`Resize`, :class:`CenterCrop` and :class:`RandomApply` as in torchvision.

The official pipelines of the field work on 8-bit images until they normalise them; a
:class:`Pipeline` with ``uint8_steps=True`` rounds every operation's output to the 256 levels
(ties to even) so the same happens here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from fscil_bench.data.resample import crop_resize
from fscil_bench.data.transforms import Normalization

#: ITU-R BT.601 luma weights (R, G, B), as PIL's and OpenCV's grey conversions use them.
LUMA_601 = (0.299, 0.587, 0.114)


class Operation(Protocol):
    """One step of a :class:`Pipeline`: float ``(B, 3, H, W)`` in [0, 1] -> float images."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor: ...


def _on(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    return values.to(device, non_blocking=True)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device="cpu", dtype=torch.float64)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round values in [0, 1] to the nearest of the 256 levels of an 8-bit image (ties to even) and clip."""
    return x.mul(255).round_().clamp_(0, 255).div_(255)


def grey(x: torch.Tensor, luma: tuple[float, float, float] = LUMA_601) -> torch.Tensor:
    """``(B, 1, H, W)`` weighted sum of the three channels."""
    w = torch.tensor(luma, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * _on(w, x.device)).sum(dim=1, keepdim=True)


def sample_crop_boxes(batch: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                      generator: torch.Generator | None, tries: int = 10) -> tuple[torch.Tensor, ...]:
    """``(top, left, h, w)`` int64 tensors ``(batch,)`` of torchvision's random resized crop boxes
    (see the module docstring), drawn on the CPU: ``tries`` candidate (area, aspect) pairs per image,
    then one corner per image."""
    area = height * width * (scale[0] + (scale[1] - scale[0]) * _rand((batch, tries), generator))
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * _rand((batch, tries), generator))
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.long().argmax(1), torch.full((batch,), -1))
    # The fallback: the centre crop of the whole image, its aspect clamped into the ratio range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fall_w, fall_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fall_h, fall_w = height, int(round(height * max(ratio)))
    else:
        fall_w, fall_h = width, height
    pick = first.clamp(min=0).view(-1, 1)
    ok = first >= 0
    bw = torch.where(ok, w.gather(1, pick).view(-1), torch.full((batch,), fall_w))
    bh = torch.where(ok, h.gather(1, pick).view(-1), torch.full((batch,), fall_h))
    corner = _rand((batch, 2), generator)
    top = torch.where(ok, (corner[:, 0] * (height - bh + 1)).long(), torch.full((batch,), (height - fall_h) // 2))
    left = torch.where(ok, (corner[:, 1] * (width - bw + 1)).long(), torch.full((batch,), (width - fall_w) // 2))
    return top, left, bh, bw


@dataclass(frozen=True)
class RandomResizedCrop:
    """torchvision's random resized crop (module docstring), resized to ``size`` x ``size`` with
    ``interpolation`` (``"bilinear"`` or ``"bicubic"``); ``antialias`` as in torchvision (PIL, tensors
    with ``antialias=True``), off for OpenCV's ``cv2.resize`` (mmcls)."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"
    antialias: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        top, left, h, w = sample_crop_boxes(x.shape[0], x.shape[2], x.shape[3], self.scale, self.ratio, generator)
        boxes = [_on(v, x.device) for v in (top, left, h, w)]
        return crop_resize(x, *boxes, (self.size, self.size), self.interpolation, self.antialias)


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        flip = _on(_rand((x.shape[0],), generator) < self.p, x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


@dataclass(frozen=True)
class RandomCrop:
    """Pad by ``padding`` pixels of ``fill`` (0: black) and crop a random ``size`` x ``size`` window
    per image (corner uniform over the integer positions)."""

    size: int
    padding: int = 0
    fill: float = 0.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b = x.shape[0]
        padded = F.pad(x, (self.padding,) * 4, value=self.fill) if self.padding else x
        span_h, span_w = padded.shape[2] - self.size + 1, padded.shape[3] - self.size + 1
        if span_h < 1 or span_w < 1:
            raise ValueError(f"a random crop of {self.size} px needs images of at least {self.size - 2 * self.padding} px "
                             f"(got {tuple(x.shape[-2:])})")
        corner = _rand((b, 2), generator)
        rows0 = _on((corner[:, 0] * span_h).long(), x.device)
        cols0 = _on((corner[:, 1] * span_w).long(), x.device)
        steps = torch.arange(self.size, device=x.device)
        rows = (rows0.view(b, 1) + steps).view(b, self.size, 1)
        cols = (cols0.view(b, 1) + steps).view(b, 1, self.size)
        out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device).view(b, 1, 1), rows, cols]
        return out.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Resize:
    """Resize every image: the shorter side to ``size`` (aspect kept, the longer side rounded
    down as torchvision does), or to ``size`` x ``size`` with ``square``."""

    size: int
    interpolation: str = "bilinear"
    antialias: bool = True
    square: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.square:
            new = (self.size, self.size)
        elif h <= w:
            new = (self.size, int(self.size * w / h))
        else:
            new = (int(self.size * h / w), self.size)
        if new == (h, w):
            return x
        return F.interpolate(x, size=new, mode=self.interpolation, antialias=self.antialias, align_corners=False)


@dataclass(frozen=True)
class CenterCrop:
    """The centre ``size`` x ``size`` window (offsets ``round((H - size) / 2)``, as torchvision)."""

    size: int

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        top, left = int(round((h - self.size) / 2)), int(round((w - self.size) / 2))
        return x[..., top : top + self.size, left : left + self.size]


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    high, low = x.amax(1), x.amin(1)
    span = high - low
    safe = torch.where(span == 0, torch.ones_like(span), span)
    s = span / torch.where(high == 0, torch.ones_like(high), high)
    rc, gc, bc = (high - r) / safe, (high - g) / safe, (high - b) / safe
    h = torch.where(high == r, bc - gc, torch.where(high == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(span == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, high], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    # Channel n of (R, G, B) = (5, 3, 1) is v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6:
    # the piecewise-linear form of the six-sector conversion, without building the six sectors.
    h, s, v = x.unbind(1)
    n = torch.tensor((5.0, 3.0, 1.0), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = (n + 6.0 * h.unsqueeze(1)) % 6.0
    return v.unsqueeze(1) * (1 - s.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp(0, 1))


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate every image's hue by ``shift`` (``(B,)``, in turns, within [-0.5, 0.5])."""
    hsv = _rgb_to_hsv(x)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], 1))


@dataclass(frozen=True)
class ColorJitter:
    """torchvision's colour jitter, per image (module docstring): ``brightness``, ``contrast`` and
    ``saturation`` factors ``~ U(max(0, 1 - v), 1 + v)``, a ``hue`` shift ``~ U(-v, v)``, applied in a
    random order per image; ``v = 0`` leaves that adjustment out.

    ``luma`` weighs (R, G, B) in the grey image that contrast and saturation blend with.
    ``uint8_levels`` rounds the grey image and the mean grey level to 8-bit levels, as PIL and
    OpenCV compute them on 8-bit images (the mean as a whole level). The draws from the generator
    are, in order: one uniform per image and adjustment (their argsort is the order), then one
    uniform per image for each adjustment.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    luma: tuple[float, float, float] = LUMA_601
    uint8_levels: bool = False

    def factors(self, batch: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(order, values)``: ``(B, 4)`` adjustment indices (0 brightness, 1 contrast, 2 saturation,
        3 hue) in application order, and ``(B, 4)`` factors (the hue column holds the shift)."""
        order = _rand((batch, 4), generator).argsort(dim=1)
        u = _rand((batch, 4), generator)
        values = torch.ones(batch, 4, dtype=torch.float64)
        for k, v in enumerate((self.brightness, self.contrast, self.saturation)):
            if v:
                low = max(0.0, 1.0 - v)
                values[:, k] = low + (1.0 + v - low) * u[:, k]
        values[:, 3] = (2 * u[:, 3] - 1) * self.hue if self.hue else 0.0
        return order, values

    def _grey(self, x: torch.Tensor) -> torch.Tensor:
        g = grey(x, self.luma)
        return quantize(g) if self.uint8_levels else g

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        order, values = self.factors(x.shape[0], generator)
        order, values = _on(order, x.device), _on(values.to(x.dtype), x.device)
        shift = values[:, 3]
        blend = values.clone()
        blend[:, 3] = 1.0  # the hue step is no blend: factor 1 leaves the image as it is
        for k in range(4):
            op = order[:, k].view(-1, 1, 1, 1)
            factor = blend.gather(1, order[:, k : k + 1]).view(-1, 1, 1, 1)
            g = self._grey(x)
            mean = g.mean(dim=(2, 3), keepdim=True)
            if self.uint8_levels:
                mean = quantize(mean)
            degenerate = torch.where(op == 1, mean, torch.where(op == 2, g, torch.zeros_like(g)))
            out = (factor * x + (1 - factor) * degenerate).clamp(0, 1)
            if self.hue:
                out = torch.where(op == 3, adjust_hue(x, shift), out)
            x = quantize(out) if self.uint8_levels else out
        return x


@dataclass(frozen=True)
class RandomGrayscale:
    """Replace each image by its grey image (in all three channels) with probability ``p``."""

    p: float = 0.1
    luma: tuple[float, float, float] = LUMA_601

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        pick = _on(_rand((x.shape[0],), generator) < self.p, x.device).view(-1, 1, 1, 1)
        return torch.where(pick, grey(x, self.luma).expand_as(x), x)


@dataclass(frozen=True)
class RandomApply:
    """Apply ``operation`` to each image with probability ``p`` (torchvision's ``RandomApply``, decided
    per image). The decisions are drawn first, then the operation's own numbers for the whole batch."""

    operation: Operation
    p: float = 0.5

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        pick = _on(_rand((x.shape[0],), generator) < self.p, x.device).view(-1, 1, 1, 1)
        return torch.where(pick, self.operation(x, generator), x)


@dataclass(frozen=True)
class Pipeline:
    """uint8 ``(B, H, W, 3)`` -> the ``steps`` in order on [0, 1] floats -> normalised ``(B, 3, h, w)``.

    With ``uint8_steps`` every step's output is rounded to 8-bit levels (module docstring). A
    pipeline is a :data:`~fscil_bench.data.arrays.BatchTransform`; its ``repr`` names every value,
    so it identifies the view in cache keys.
    """

    norm: Normalization
    steps: tuple[Operation, ...] = ()
    uint8_steps: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        for step in self.steps:
            x = step(x, generator)
            if self.uint8_steps:
                x = quantize(x)
        mean = _on(torch.tensor(self.norm.mean).view(1, 3, 1, 1), x.device)
        std = _on(torch.tensor(self.norm.std).view(1, 3, 1, 1), x.device)
        return (x - mean) / std
