"""Crop-and-resize of every image of a batch to its own box, in one pass, with exact resampling.

A random resized crop gives every image of a batch its own box. Cropping each image and calling
``torch.nn.functional.interpolate`` on it one at a time would cost one call per image; instead
the resampling is written as two matrices per image, ``out = R_y @ image @ R_x^T``, where row ``d``
of ``R_y`` holds the weights of the input rows that output row ``d`` reads. Both matrices of a
batch are built at once, and the product is two batched matrix multiplications.

The weights are those of ``interpolate`` with ``align_corners=False`` applied to the cropped box
(the box is ``length`` pixels from ``start``; a tap outside the box is clamped to its edge, so no
pixel outside the box is ever read). For an output of ``S`` pixels, ``scale = length / S`` and
output pixel ``d``:

* ``antialias=False`` (``interpolate``'s default; OpenCV's ``cv2.resize``):
  the source coordinate is ``u = (d + 1/2) scale - 1/2``.

  - ``"bilinear"``: ``u`` is clamped at 0; taps ``floor(u)`` and ``floor(u) + 1`` with weights
    ``1 - t`` and ``t``, ``t = u - floor(u)``.
  - ``"bicubic"``: taps ``floor(u) - 1 .. floor(u) + 2`` with the cubic convolution weights of
    Keys (``A = -0.75``) at distances ``1 + t, t, 1 - t, 2 - t``.

* ``antialias=True`` (``interpolate(antialias=True)``; torchvision's resize of tensors; PIL's
  resampling): the filter is stretched by ``scale`` when shrinking. With ``support = r * max(scale, 1)``
  (``r`` = 1 bilinear, 2 bicubic) and centre ``c = (d + 1/2) scale``, the taps are ``j`` in
  ``[floor(c - support + 1/2), floor(c + support + 1/2))`` inside the box, with weights
  ``k((j + 1/2 - c) / max(scale, 1))`` normalised to sum 1: ``k`` the triangle ``1 - |x|`` (bilinear)
  or Keys' cubic with ``A = -0.5`` (bicubic).
"""

from __future__ import annotations

import math

import torch

INTERPOLATIONS = ("bilinear", "bicubic")


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with parameter ``a`` (0 outside ``|x| < 2``)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _taps(start: torch.Tensor, length: torch.Tensor, full: int, out: int, mode: str, antialias: bool,
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Input indices (relative to the box) and weights ``(B, out, K)`` of every output pixel of
    boxes no longer than ``full`` (K is bounded from ``full``, so nothing is read back from the device)."""
    if mode not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {mode!r}; choose from {', '.join(INTERPOLATIONS)}")
    device = start.device
    scale = (length.double() / out).view(-1, 1, 1)  # (B, 1, 1)
    last = (length - 1).view(-1, 1, 1)
    d = torch.arange(out, device=device, dtype=torch.float64).view(1, -1, 1)
    if not antialias:
        u = (d + 0.5) * scale - 0.5
        if mode == "bilinear":
            u = u.clamp(min=0)
            base = u.floor()
            t = u - base
            offsets = torch.arange(2, device=device, dtype=torch.float64).view(1, 1, -1)
            weights = torch.cat([1 - t, t], dim=2)
        else:
            base = u.floor()
            t = u - base
            offsets = torch.arange(-1, 3, device=device, dtype=torch.float64).view(1, 1, -1)
            weights = _cubic(offsets - t, -0.75)
        index = (base + offsets).long()
        return torch.minimum(index.clamp(min=0), last), weights
    radius = 1.0 if mode == "bilinear" else 2.0
    stretch = scale.clamp(min=1.0)
    support = radius * stretch
    centre = (d + 0.5) * scale
    low = (centre - support + 0.5).floor().clamp(min=0)
    high = torch.minimum((centre + support + 0.5).floor(), length.double().view(-1, 1, 1))
    width = math.ceil(2 * radius * max(full / out, 1.0)) + 2
    index = low + torch.arange(width, device=device, dtype=torch.float64).view(1, 1, -1)
    x = (index + 0.5 - centre) / stretch
    weights = (1 - x.abs()).clamp(min=0) if mode == "bilinear" else _cubic(x, -0.5)
    weights = torch.where(index < high, weights, torch.zeros_like(weights))
    total = weights.sum(dim=2, keepdim=True)
    weights = weights / torch.where(total == 0, torch.ones_like(total), total)
    return torch.minimum(index.long(), last), weights


def resampling_matrix(start: torch.Tensor, length: torch.Tensor, full: int, out: int, mode: str = "bilinear",
                      antialias: bool = False) -> torch.Tensor:
    """``(B, out, full)`` float32 matrices: row ``d`` of matrix ``b`` resamples output pixel ``d``
    from the box ``[start[b], start[b] + length[b])`` of an axis of ``full`` pixels (see the
    module docstring for the weights)."""
    index, weights = _taps(start, length, full, out, mode, antialias)
    index = index + start.view(-1, 1, 1)
    matrix = torch.zeros(len(start), out, full, dtype=torch.float32, device=start.device)
    return matrix.scatter_add_(2, index, weights.float())


def crop_resize(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                size: tuple[int, int], mode: str = "bilinear", antialias: bool = False) -> torch.Tensor:
    """Crop box ``b`` (``top``, ``left``, ``height``, ``width``: integer tensors ``(B,)``) of image ``b``
    of ``x`` ``(B, C, H, W)`` and resize it to ``size`` ``(h, w)``; equal, up to float rounding, to
    ``interpolate(x[b:b+1, :, top:top+height, left:left+width], size, mode=mode, antialias=antialias)``
    for every ``b``."""
    _, _, h, w = x.shape
    rows = resampling_matrix(top.to(x.device), height.to(x.device), h, size[0], mode, antialias)
    cols = resampling_matrix(left.to(x.device), width.to(x.device), w, size[1], mode, antialias)
    return rows.unsqueeze(1) @ x.float() @ cols.transpose(1, 2).unsqueeze(1)
