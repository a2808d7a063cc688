"""Rendering glyphs100's samples: the distortion knobs, the random streams and the batch renderer.

Rendering
---------
Each (character, face) pair is rasterised once (Pillow) into a ``MASK_RES`` x ``MASK_RES``
coverage mask, cropped to the ink, scaled so its longer side spans ``MASK_FILL`` and centred.
Samples are then made in torch batches: an affine sampling grid (plus the elastic warp) and
``grid_sample`` at ``SUPERSAMPLE`` x the output size, box-filtered down; colours, texture,
clutter, blur and noise are computed for the whole batch; the result is quantised to uint8.
The knobs are the module-level constants below; changing any of them changes the data, so
bump :data:`GLYPHS_VERSION` with them. NOTES.md records the generation time and how hard the
result is for a small CNN.

Random streams
--------------
Sample ``i`` of class ``c`` in split ``s`` takes all its random numbers from a stream seeded with
``SeedSequence([salt, seed, s, c, i // CHUNK])``; a stream always draws a whole chunk, and
batches are laid out the same way whatever the sizes. Hence the train and test splits are
independent, asking for more or fewer samples of one split never changes the other, and a smaller
size is exactly (bit for bit) a per-class prefix of a larger one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from fscil_bench.data.arrays import ImageArray
from fscil_bench.data.glyph_classes import (
    MASK_FILL,
    MASK_RES,
    RENDER_PT,
    MaskBank,
    mask_bank,
)

# --- distortion knobs (change any of them -> bump GLYPHS_VERSION) ------------------------------
ROTATION_DEG = 15.0  # rotation uniform in +-ROTATION_DEG (keeps 6 and 9 apart)
SCALE_RANGE = (0.35, 1.0)  # the glyph's longer side as a fraction of the image side
ASPECT_JITTER = 0.2  # log aspect ratio uniform in +-ASPECT_JITTER
SHEAR = 0.35  # horizontal shear factor uniform in +-SHEAR
ELASTIC = 0.08  # elastic warp: displacement std in glyph units (the glyph spans about +-MASK_FILL)
STROKE_GAMMA = 2.0  # stroke weight: coverage ** g, log g uniform in +-log(STROKE_GAMMA)
TRANSLATE = 1.0  # centre offset uniform in +-TRANSLATE x (room left by the glyph)
TRANSLATE_OVERFLOW = 0.1  # extra offset allowed past the border (normalised units, image = 2)
MIN_CONTRAST = 0.25  # minimum |luma(fg) - luma(bg)| of the two base colours (0..1)
MAX_SATURATION = 1.0  # colour saturation as a fraction of the most the gamut allows
TEXTURE_PROBS = (0.2, 0.3, 0.3, 0.2)  # flat, linear gradient, smooth noise, stripes
TEXTURE_LUMA = 0.6  # background texture luma amplitude, as a fraction of the fg/bg contrast
TEXTURE_CHROMA = 0.25  # background texture chroma amplitude (0..1)
STRIPE_CYCLES = (1.5, 5.0)  # stripes: cycles across the image
NOISE_CELLS = 4  # smooth noise: a NOISE_CELLS x NOISE_CELLS random grid, upsampled
FG_GRADIENT = 0.3  # foreground gradient amplitude, as a fraction of the fg/bg contrast
CLUTTER_LAYERS = 2  # clutter layers: each a big, freely rotated piece of a random glyph ...
CLUTTER_PROB = 0.7  # ... present with this probability
CLUTTER_SCALE = (0.8, 1.6)  # its longer side as a fraction of the image side
CLUTTER_CONTRAST = (0.15, 0.45)  # its luma, as a fraction of the way from background to foreground
BLUR_MAX = 1.2  # Gaussian blur sigma (pixels at the output size) uniform in [0, BLUR_MAX]
PIXEL_NOISE = 0.12  # per-pixel Gaussian noise std uniform in [0, PIXEL_NOISE]
SUPERSAMPLE = 2  # glyphs are resampled at SUPERSAMPLE x size, then box-filtered down

# --- random streams ----------------------------------------------------------------------------
CHUNK = 10  # samples per random stream: sample i of a class is drawn in chunk i // CHUNK
GROUP = 100  # classes rendered together (a batch is one chunk of each of GROUP classes)
# Uniform numbers drawn per sample. Columns: 0 font, 1-6 rotation, scale, aspect, shear, x, y;
# 7-12 background luma, foreground luma, background hue, saturation, foreground hue, saturation;
# 13-19 texture kind, luma amplitude, direction, stripe cycles, stripe phase, tint hue, tint
# amplitude; 20 noise; 21-22 foreground gradient direction, amplitude; 23 blur; 24-39 two clutter
# layers of 8 (glyph, scale, angle, x, y, luma, hue, present); 40 stroke weight; 41-47 spare.
_NUM_UNIFORMS = 48
_COL_CLUTTER = 24
_SALT = 0x61796C67  # mixed into every stream's seed
_SPLITS = {"train": 0, "test": 1}

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _stream_seed(seed: int, split: str, class_id: int, chunk: int) -> int:
    state = np.random.SeedSequence([_SALT, seed, _SPLITS[split], class_id, chunk]).generate_state(2)
    return (int(state[0]) << 32) | int(state[1])


def _draw_chunk(seed: int, split: str, class_id: int, chunk: int, size: int) -> tuple[torch.Tensor, ...]:
    """All random numbers of CHUNK samples of one class: always a whole chunk, in a fixed order,
    so that sample i does not depend on how many samples are asked for."""
    g = torch.Generator().manual_seed(_stream_seed(seed, split, class_id, chunk))
    uniforms = torch.rand(CHUNK, _NUM_UNIFORMS, generator=g)
    cells = torch.randn(CHUNK, 3, NOISE_CELLS, NOISE_CELLS, generator=g)  # texture, warp x, warp y
    noise = torch.randn(CHUNK, 3, size, size, generator=g)
    return uniforms, cells, noise


def _chroma_basis() -> tuple[torch.Tensor, torch.Tensor]:
    """Two orthonormal RGB directions along which luma does not change."""
    e1 = torch.tensor([1.0, 0.0, -1.0])
    e1 = e1 - (e1 @ _LUMA) / (_LUMA @ _LUMA) * _LUMA
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(_LUMA, e1)
    return e1, e2 / e2.norm()


def _colour(luma: torch.Tensor, hue: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """RGB colours (B, 3) in [0, 1] with exactly the given luma; saturation is a fraction of the
    largest chroma the RGB cube allows at that luma."""
    e1, e2 = _chroma_basis()
    angle = hue * (2 * math.pi)
    direction = torch.cos(angle)[:, None] * e1 + torch.sin(angle)[:, None] * e2  # (B, 3)
    grey = luma[:, None].expand(-1, 3)
    inf = torch.full_like(direction, float("inf"))
    room = torch.where(direction > 1e-6, (1 - grey) / direction.clamp_min(1e-6), inf)
    room = torch.minimum(room, torch.where(direction < -1e-6, grey / (-direction).clamp_min(1e-6), inf))
    t = saturation * MAX_SATURATION * room.min(dim=1).values
    return (grey + t[:, None] * direction).clamp(0, 1)


@lru_cache(maxsize=8)
def _bicubic_weights(cells: int, size: int) -> torch.Tensor:
    """(size, cells): 1-D bicubic interpolation weights, as ``F.interpolate`` uses them."""
    basis = torch.eye(cells).view(cells, 1, cells, 1)
    return F.interpolate(basis, size=(size, 1), mode="bicubic", align_corners=False)[:, 0, :, 0].T.contiguous()


def _upsample(cells: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic upsampling of (B, C, n, n) to (B, C, size, size) as two small matrix products
    (much cheaper on the CPU than ``F.interpolate`` for such small inputs)."""
    w = _bicubic_weights(cells.shape[-1], size)
    return w @ cells @ w.T


def _affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, 1, size, size), align_corners=False)``, computed as sums of a
    per-column and a per-row term (cheaper than the batched matrix product)."""
    coords = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    grid = torch.empty(theta.shape[0], size, size, 2)
    for i in range(2):
        along_x = theta[:, i, 0, None] * coords  # (B, W)
        along_y = theta[:, i, 1, None] * coords + theta[:, i, 2, None]  # (B, H)
        torch.add(along_x[:, None, :], along_y[:, :, None], out=grid[..., i])
    return grid


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with a per-image sigma (pixels; 0 = none)."""
    radius = 2
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True))[:, :, None, None, None]  # (B, taps, 1, 1, 1)
    h, w = images.shape[-2:]
    x = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    x = sum(kernel[:, i] * x[..., i : i + w] for i in range(2 * radius + 1))
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return sum(kernel[:, i] * x[..., i : i + h, :] for i in range(2 * radius + 1))


def _render(u: torch.Tensor, cells: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor, bank: MaskBank,
            size: int) -> torch.Tensor:
    """Render one batch; returns uint8 (B, size, size, 3)."""
    # font and glyph mask
    counts = bank.counts[labels]
    pick = torch.minimum((u[:, 0] * counts).long(), counts - 1)
    src = bank.masks[bank.starts[labels] + pick]

    # affine map from glyph (mask) coordinates to image coordinates, both normalised to [-1, 1]
    angle = (2 * u[:, 1] - 1) * math.radians(ROTATION_DEG)
    scale = SCALE_RANGE[0] + u[:, 2] * (SCALE_RANGE[1] - SCALE_RANGE[0])
    log_aspect = (2 * u[:, 3] - 1) * ASPECT_JITTER
    shear = (2 * u[:, 4] - 1) * SHEAR
    k = scale / MASK_FILL
    sx, sy = k * torch.exp(log_aspect / 2), k * torch.exp(-log_aspect / 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # M = R(angle) @ [[1, shear], [0, 1]] @ diag(sx, sy)
    m00, m01 = cos * sx, (cos * shear - sin) * sy
    m10, m11 = sin * sx, (sin * shear + cos) * sy
    room = (1 - scale).clamp_min(0) * TRANSLATE + TRANSLATE_OVERFLOW
    tx, ty = (2 * u[:, 5] - 1) * room, (2 * u[:, 6] - 1) * room
    det = m00 * m11 - m01 * m10
    i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
    theta = torch.stack(
        [torch.stack([i00, i01, -(i00 * tx + i01 * ty)], 1), torch.stack([i10, i11, -(i10 * tx + i11 * ty)], 1)], 1
    )
    hi_res = size * SUPERSAMPLE
    grid = _affine_grid(theta, hi_res)
    # elastic distortion: a smooth random displacement field, in glyph (mask) coordinates
    warp = _upsample(cells[:, 1:3], hi_res)
    grid = grid + ELASTIC * warp.permute(0, 2, 3, 1)
    mask = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if SUPERSAMPLE > 1:
        mask = F.avg_pool2d(mask, SUPERSAMPLE)  # box filter down to (B, 1, size, size)
    # stroke weight: a power of the soft coverage moves the edges in or out by about a pixel
    gamma = torch.exp((2 * u[:, 40] - 1) * math.log(STROKE_GAMMA))
    mask = mask.clamp(0, 1).pow(gamma[:, None, None, None])

    # colours with a minimum luma contrast
    bg_luma = u[:, 7]
    below = (bg_luma - MIN_CONTRAST).clamp_min(0)
    above = (1 - MIN_CONTRAST - bg_luma).clamp_min(0)
    v = u[:, 8] * (below + above)
    fg_luma = torch.where(v < below, v, bg_luma + MIN_CONTRAST + (v - below))
    bg = _colour(bg_luma, u[:, 9], u[:, 10])
    fg = _colour(fg_luma, u[:, 11], u[:, 12])
    contrast = (fg_luma - bg_luma).abs()

    # background texture: flat, gradient, smooth noise or stripes, in [-1, 1]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) * (2 / size) - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    direction = u[:, 15] * (2 * math.pi)
    proj = torch.cos(direction)[:, None, None] * xx + torch.sin(direction)[:, None, None] * yy
    gradient = proj / math.sqrt(2)
    cycles = STRIPE_CYCLES[0] + u[:, 16] * (STRIPE_CYCLES[1] - STRIPE_CYCLES[0])
    stripes = torch.sin(math.pi * cycles[:, None, None] * proj + 2 * math.pi * u[:, 17, None, None])
    smooth = torch.tanh(_upsample(cells[:, :1], size)[:, 0])
    kind = torch.bucketize(u[:, 13].contiguous(), torch.tensor(np.cumsum(TEXTURE_PROBS)[:-1], dtype=torch.float32))
    texture = torch.where(
        (kind == 1)[:, None, None], gradient, torch.where((kind == 2)[:, None, None], smooth, stripes)
    )
    texture = torch.where((kind == 0)[:, None, None], torch.zeros_like(texture), texture)
    e1, e2 = _chroma_basis()
    tint_angle = u[:, 18] * (2 * math.pi)
    tint = torch.cos(tint_angle)[:, None] * e1 + torch.sin(tint_angle)[:, None] * e2
    tint = u[:, 14, None] * TEXTURE_LUMA * contrast[:, None] + u[:, 19, None] * TEXTURE_CHROMA * tint  # (B, 3)
    background = bg[:, :, None, None] + tint[:, :, None, None] * texture[:, None]

    # foreground: base colour plus a linear gradient
    fg_dir = u[:, 21] * (2 * math.pi)
    fg_proj = (torch.cos(fg_dir)[:, None, None] * xx + torch.sin(fg_dir)[:, None, None] * yy) / math.sqrt(2)
    fg_amp = (2 * u[:, 22] - 1) * FG_GRADIENT * contrast
    foreground = fg[:, :, None, None] + (fg_amp[:, None, None] * fg_proj)[:, None]

    # clutter: large, freely rotated pieces of random glyphs, in colours between background and
    # foreground, under the glyph
    for layer in range(CLUTTER_LAYERS):
        c = u[:, _COL_CLUTTER + 8 * layer : _COL_CLUTTER + 8 * (layer + 1)]
        k = (CLUTTER_SCALE[0] + c[:, 1] * (CLUTTER_SCALE[1] - CLUTTER_SCALE[0])) / MASK_FILL
        angle = c[:, 2] * (2 * math.pi)
        cos, sin = torch.cos(angle) / k, torch.sin(angle) / k  # inverse of rotation and scale
        cx, cy = 2 * c[:, 3] - 1, 2 * c[:, 4] - 1
        theta = torch.stack(
            [torch.stack([cos, sin, -(cos * cx + sin * cy)], 1), torch.stack([-sin, cos, sin * cx - cos * cy], 1)], 1
        )
        grid = _affine_grid(theta, size)
        index = (c[:, 0] * len(bank.masks)).long().clamp_max(len(bank.masks) - 1)
        piece = F.grid_sample(bank.masks[index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        piece = piece * (c[:, 7] < CLUTTER_PROB).float()[:, None, None, None]
        fraction = CLUTTER_CONTRAST[0] + c[:, 5] * (CLUTTER_CONTRAST[1] - CLUTTER_CONTRAST[0])
        colour = _colour(bg_luma + fraction * (fg_luma - bg_luma), c[:, 6], u[:, 10])
        background = torch.lerp(background, colour[:, :, None, None].expand_as(background), piece)

    image = torch.lerp(background, foreground, mask)
    image = _blur(image, u[:, 23] * BLUR_MAX)
    image = image + (u[:, 20] * PIXEL_NOISE)[:, None, None, None] * noise
    image = image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return image.permute(0, 2, 3, 1).contiguous()


def _generate_split(chars: Sequence[str], split: str, per_class: int, seed: int, size: int,
                    advance: Callable[[int], None]) -> ImageArray:
    """Render ``per_class`` samples of every class.

    Chunk ``k`` of the classes ``g * GROUP ... (g + 1) * GROUP - 1`` are rendered together, each
    chunk drawn and rendered whole. The batches therefore have one shape and one layout whatever
    ``per_class`` is, so a sample's pixels never depend on how many samples were asked for, not
    even in the last bit of floating point."""
    bank = mask_bank(tuple(chars))
    n = len(chars) * per_class
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(len(chars), dtype=np.int64), per_class)
    chunks = -(-per_class // CHUNK)
    for first in range(0, len(chars), GROUP):
        group = range(first, min(first + GROUP, len(chars)))
        batch_labels = torch.arange(first, group.stop).repeat_interleave(CHUNK)
        for chunk in range(chunks):
            take = min(CHUNK, per_class - chunk * CHUNK)
            u, cells, noise = (torch.cat(parts) for parts in zip(*(
                _draw_chunk(seed, split, class_id, chunk, size) for class_id in group)))
            rendered = _render(u, cells, noise, batch_labels, bank, size).numpy()
            for slot, class_id in enumerate(group):
                at = class_id * per_class + chunk * CHUNK
                images[at : at + take] = rendered[slot * CHUNK : slot * CHUNK + take]
        advance(len(group) * per_class)
    return ImageArray(images, labels)


def generation_parameters() -> dict:
    """The knobs that shape the generated images (recorded in the manifest)."""
    return {
        "mask_res": MASK_RES,
        "mask_fill": MASK_FILL,
        "render_pt": RENDER_PT,
        "rotation_deg": ROTATION_DEG,
        "scale_range": list(SCALE_RANGE),
        "aspect_jitter": ASPECT_JITTER,
        "shear": SHEAR,
        "elastic": ELASTIC,
        "stroke_gamma": STROKE_GAMMA,
        "translate": TRANSLATE,
        "translate_overflow": TRANSLATE_OVERFLOW,
        "min_contrast": MIN_CONTRAST,
        "max_saturation": MAX_SATURATION,
        "texture_probs": {"flat": TEXTURE_PROBS[0], "gradient": TEXTURE_PROBS[1],
                          "smooth_noise": TEXTURE_PROBS[2], "stripes": TEXTURE_PROBS[3]},
        "texture_luma": TEXTURE_LUMA,
        "texture_chroma": TEXTURE_CHROMA,
        "stripe_cycles": list(STRIPE_CYCLES),
        "noise_cells": NOISE_CELLS,
        "fg_gradient": FG_GRADIENT,
        "clutter_layers": CLUTTER_LAYERS,
        "clutter_prob": CLUTTER_PROB,
        "clutter_scale": list(CLUTTER_SCALE),
        "clutter_contrast": list(CLUTTER_CONTRAST),
        "blur_max": BLUR_MAX,
        "pixel_noise": PIXEL_NOISE,
        "supersample": SUPERSAMPLE,
        "chunk": CHUNK,
    }
