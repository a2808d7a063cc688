"""glyphs100: the built-in benchmark data set, rendered from fonts.

100 classes of characters - digits, Latin, Greek and Cyrillic letters - drawn at 32 x 32 RGB from
the 16 text faces that matplotlib ships (``matplotlib/mpl-data/fonts/ttf``: DejaVu Sans, Sans
Mono and Serif in regular, bold, oblique/italic and bold oblique/italic, and STIXGeneral in the
same four styles). In the tradition of notMNIST the classes are real glyph shapes with real
variation inside each class: every sample picks one of the faces that has the character, and gets
a random affine distortion (rotation, scale, aspect, shear, translation), a small elastic warp, a
stroke-weight change, foreground and background colours with a minimum luma contrast, a textured
background (flat, gradient, smooth noise or stripes), clutter (big pieces of other glyphs in
in-between colours), blur and pixel noise. Everything is a function of the seed.

Classes
-------
Class id = position in :data:`CLASS_CHARS`. The order is fixed (not drawn per run) and
interleaves the scripts evenly, so that the 60 base classes (6 digits, 28 Latin, 15 Greek, 11
Cyrillic) and the 40 incremental ones (4, 19, 9, 8) both mix all four::

     0 h latin small h                        1 ϑ greek theta symbol                   2 Ѣ cyrillic capital yat
     3 A latin capital A                      4 1 digit 1                              5 P latin capital P
     6 φ greek small phi                      7 Z latin capital Z                      8 Ж cyrillic capital zhe
     9 n latin small n                       10 σ greek small sigma                   11 S latin capital S
    12 Ш cyrillic capital sha                13 N latin capital N                     14 μ greek small mu
    15 8 digit 8                             16 d latin small d                       17 J latin capital J
    18 Ҥ cyrillic capital ligature en ghe    19 ζ greek small zeta                    20 e latin small e
    21 G latin capital G                     22 Λ greek capital lambda                23 Ц cyrillic capital tse
    24 q latin small q                       25 9 digit 9                             26 Þ latin capital thorn
    27 Δ greek capital delta                 28 Ø latin capital o with stroke         29 Э cyrillic capital e
    30 Œ latin capital ligature oe           31 λ greek small lambda                  32 L latin capital L
    33 Ы cyrillic capital yeru               34 5 digit 5                             35 m latin small m
    36 Σ greek capital sigma                 37 C latin capital C                     38 F latin capital F
    39 Ѥ cyrillic capital iotified e         40 τ greek small tau                     41 K latin capital K
    42 T latin capital T                     43 ξ greek small xi                      44 Ч cyrillic capital che
    45 7 digit 7                             46 t latin small t                       47 H latin capital H
    48 δ greek small delta                   49 Ю cyrillic capital yu                 50 f latin small f
    51 Ϟ greek letter koppa                  52 Q latin capital Q                     53 Ƣ latin capital oi
    54 2 digit 2                             55 Ъ cyrillic capital hard sign          56 Π greek capital pi
    57 i latin small i                       58 W latin capital W                     59 β greek small beta
    60 Љ cyrillic capital lje                61 ʤ latin small dezh digraph            62 X latin capital X
    63 Ψ greek capital psi                   64 ð latin small eth                     65 6 digit 6
    66 Ѫ cyrillic capital big yus            67 a latin small a                       68 Ω greek capital omega
    69 E latin capital E                     70 Ҧ cyrillic capital pe with middle hook71 U latin capital U
    72 Ϡ greek letter sampi                  73 Ħ latin capital h with stroke         74 4 digit 4
    75 B latin capital B                     76 Д cyrillic capital de                 77 Ξ greek capital xi
    78 D latin capital D                     79 V latin capital V                     80 Φ greek capital phi
    81 Ђ cyrillic capital dje                82 R latin capital R                     83 M latin capital M
    84 0 digit 0                             85 α greek small alpha                   86 Ʊ latin capital upsilon
    87 Л cyrillic capital el                 88 y latin small y                       89 ω greek small omega
    90 r latin small r                       91 Њ cyrillic capital nje                92 Y latin capital Y
    93 ς greek small final sigma             94 Ł latin capital l with stroke         95 3 digit 3
    96 g latin small g                       97 Б cyrillic capital be                 98 η greek small eta
    99 Æ latin capital ae

How the characters were chosen. A character is left out when, in one of the fonts, it has the
same shape as a character already in the list:

* the same letter in another script: Latin A / Greek Alpha / Cyrillic A, and likewise B, E, H, K, M,
  N, O, P, T, X, Y, Z against Greek and Cyrillic, Cyrillic a, e, o, p, c, y, x against Latin,
  Greek Gamma = Cyrillic Ghe, Pi = Pe, Phi = Ef, omicron, nu ~ v, kappa ~ k, iota, upsilon ~ u,
  rho ~ p, chi ~ x, gamma ~ y;
* a small letter that is a smaller copy of its capital (c o s v w x z k p u; most Cyrillic
  small letters, which are small capitals, and in italics turn into Latin look-alikes);
* letter against digit: O/o against 0, l/I/| against 1, Ze against 3, be against 6;
* a left-right mirror image of a character in the list (b/d, N/I (Cyrillic), R/Ya, E (Cyrillic)/
  Ukrainian Ie, 3/epsilon), because the benchmark's training augmentation flips images;
* a difference that is only a small mark, which scaling, blur and 32 px wash out: Sha/Shcha,
  Dje/Tshe, I/short I, Psi/psi, Pi/pi, Theta/theta/0, beta/sharp s, Y/gamma, j/J, e/schwa
  (against Cyrillic E), Qoppa/Q, ligature Te-Tse/Tse, Gamma/r/T.

After the rules, a small CNN trained on a larger candidate pool (113 characters) showed which
pairs it still confuses, and the most confused of those were dropped (the last three bullets
grew from that). Pairs that differ by a whole stroke, as E/F or P/R do, stay (n/eta, i/1, H/H
with stroke, Delta/Lambda): they make the task harder without making it ambiguous. Every
character is covered by at least ``MIN_FONTS_PER_CLASS`` (4) of the faces, checked with
fontTools on each font's cmap (:func:`fonts_for`); all 100 are in fact in 8 to 16 faces, and a
sample only uses faces that have its character.

Rendering
---------
Each (character, face) pair is rasterised once (Pillow) into a ``MASK_RES`` x ``MASK_RES``
coverage mask, cropped to the ink, scaled so its longer side spans ``MASK_FILL`` and centred.
Samples are then made in torch batches: an affine sampling grid (plus the elastic warp) and
``grid_sample`` at ``SUPERSAMPLE`` x the output size, box-filtered down; colours, texture,
clutter, blur and noise are computed for the whole batch; the result is quantised to uint8.
The knobs are the module-level constants below; changing any of them changes the data, so
bump :data:`GLYPHS_VERSION` with them. Generating the default size (100 x (500 + 100) images)
takes about 30 s of CPU time (measured on one core of a 2-core machine; with both cores busy
with other work it took 75 s of wall time).

Difficulty: with these settings a small CNN (``convnet4-small``, 8 epochs of AdamW with a
one-cycle schedule, pad-and-crop augmentation without flips) trained on the 60 base classes x
500 images reaches about 85% test accuracy (100 per class); a nearest class mean on the raw
pixels of 10 classes gets about 30% (chance: 10%).

Random streams
--------------
Sample ``i`` of class ``c`` in split ``s`` takes all its random numbers from a stream seeded with
``SeedSequence([salt, seed, s, c, i // CHUNK])``; a stream always draws a whole chunk, and
batches are laid out the same way whatever the sizes. Hence the train and test splits are
independent, asking for more or fewer samples of one split never changes the other, and a smaller
size is exactly (bit for bit) a per-class prefix of a larger one.
"""

from __future__ import annotations

import json
import math
import time
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .arrays import ImageArray
from .cache import atomic_write_text, load_arrays, save_arrays

GLYPHS_VERSION: int = 1

# The 100 classes; class id = position. See the module docstring for how they were chosen.
CLASS_CHARS = "hϑѢA1PφZЖnσSШNμ8dJҤζeGΛЦq9ÞΔØЭŒλLЫ5mΣCFѤτKTξЧ7tHδЮfϞQƢ2ЪΠiWβЉʤXΨð6ѪaΩEҦUϠĦ4BДΞDVΦЂRM0αƱЛyωrЊYςŁ3gБηÆ"

FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)

MIN_FONTS_PER_CLASS = 4

# --- glyph masks -------------------------------------------------------------------------------
MASK_RES = 64  # side of the pre-rendered glyph masks
MASK_FILL = 0.9  # the glyph's longer side spans this fraction of the mask
RENDER_PT = 96  # font size (pixels per em) the masks are rasterised at before resizing

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


# --- classes and fonts -------------------------------------------------------------------------


def glyph_classes() -> list[str]:
    """The 100 characters; the index of a character is its class id."""
    return list(CLASS_CHARS)


def _class_name(char: str) -> str:
    if char.isdigit() and char.isascii():
        return f"digit {char}"
    name = unicodedata.name(char).lower()
    for script in ("latin", "greek", "cyrillic"):
        for case in ("capital", "small"):
            prefix = f"{script} {case} letter "
            if name.startswith(prefix):
                rest = name[len(prefix) :]
                if script == "latin" and len(rest) == 1:
                    rest = char
                return f"{script} {case} {rest}"
    return name


def _readable(name: str) -> str:
    return name.replace("lamda", "lambda")  # Unicode spells the Greek letter "LAMDA"


def glyph_class_names() -> list[str]:
    """Readable class names, e.g. ``digit 3``, ``latin capital G``, ``greek small lambda``."""
    return [_readable(_class_name(c)) for c in CLASS_CHARS]


def _fonts_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def available_fonts() -> list[Path]:
    """The 16 font files (shipped with matplotlib) the glyphs are rendered from."""
    folder = _fonts_dir()
    paths = [folder / name for name in FONT_FILES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"matplotlib's font folder {folder} lacks {', '.join(missing)}")
    return paths


@lru_cache(maxsize=1)
def _font_coverage() -> dict[str, frozenset[int]]:
    """Code points each font maps to a glyph, by font file name."""
    from fontTools.ttLib import TTFont

    coverage = {}
    for path in available_fonts():
        font = TTFont(path, lazy=True)
        try:
            coverage[path.name] = frozenset(font["cmap"].getBestCmap())
        finally:
            font.close()
    return coverage


def fonts_for(char: str) -> list[str]:
    """Names of the font files that have a glyph for ``char``, in :data:`FONT_FILES` order."""
    coverage = _font_coverage()
    return [name for name in FONT_FILES if ord(char) in coverage[name]]


# --- glyph masks -------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _pil_font(path: str):
    from PIL import ImageFont

    return ImageFont.truetype(path, RENDER_PT)


def render_mask(char: str, font_path: Path) -> np.ndarray:
    """``char`` in ``font_path`` as a float32 ``(MASK_RES, MASK_RES)`` coverage mask in [0, 1]:
    cropped to its ink, scaled so that its longer side spans ``MASK_FILL`` of the mask, centred."""
    from PIL import Image, ImageDraw

    font = _pil_font(str(font_path))
    left, top, right, bottom = font.getbbox(char)
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=font, fill=255)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"{Path(font_path).name} renders {char!r} (U+{ord(char):04X}) blank")
    glyph = canvas.crop(box)
    w, h = glyph.size
    k = MASK_FILL * MASK_RES / max(w, h)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    glyph = glyph.resize((nw, nh), Image.Resampling.LANCZOS)
    mask = Image.new("L", (MASK_RES, MASK_RES), 0)
    mask.paste(glyph, ((MASK_RES - nw) // 2, (MASK_RES - nh) // 2))
    return np.asarray(mask, dtype=np.float32) / 255.0


class _MaskBank:
    """Every (character, covering font) mask of a character list, stacked."""

    def __init__(self, chars: Sequence[str]):
        folder = _fonts_dir()
        masks, starts, counts, fonts = [], [], [], []
        for char in chars:
            names = fonts_for(char)
            if len(names) < MIN_FONTS_PER_CLASS:
                raise ValueError(f"{char!r} (U+{ord(char):04X}) is covered by only {len(names)} fonts")
            starts.append(len(masks))
            counts.append(len(names))
            fonts.append(names)
            masks.extend(render_mask(char, folder / name) for name in names)
        self.masks = torch.from_numpy(np.stack(masks)).unsqueeze(1)  # (M, 1, R, R)
        self.starts = torch.tensor(starts, dtype=torch.long)
        self.counts = torch.tensor(counts, dtype=torch.long)
        self.fonts = fonts


@lru_cache(maxsize=2)
def _mask_bank(chars: tuple[str, ...]) -> _MaskBank:
    return _MaskBank(chars)


# --- rendering ---------------------------------------------------------------------------------


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


def _render(u: torch.Tensor, cells: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor, bank: _MaskBank,
            size: int) -> torch.Tensor:
    """Render one batch; returns uint8 (B, size, size, 3)."""
    b = u.shape[0]
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
    bank = _mask_bank(tuple(chars))
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


def generate_glyphs(train_per_class: int, test_per_class: int, seed: int = 0, size: int = 32,
                    progress: Callable[[int, int], None] | None = None) -> tuple[ImageArray, ImageArray, dict]:
    """Render glyphs100.

    Returns ``(train, test, manifest)``: uint8 images ``(N, size, size, 3)`` with int64 labels,
    ordered by class then sample index, and a JSON-serialisable manifest. Deterministic in
    ``seed``; sample ``i`` of class ``c`` in a split depends only on ``(seed, split, c, i)`` (and
    ``size``), so the two splits are independent and a smaller size is a prefix of a larger one.
    ``progress(done, total)`` is called as images are finished.
    """
    if train_per_class < 0 or test_per_class < 0:
        raise ValueError("per-class sizes must be >= 0")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    if size < 4:
        raise ValueError("size must be >= 4")
    chars = glyph_classes()
    total = len(chars) * (train_per_class + test_per_class)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    with torch.inference_mode():
        train = _generate_split(chars, "train", train_per_class, seed, size, advance)
        test = _generate_split(chars, "test", test_per_class, seed, size, advance)
    bank = _mask_bank(tuple(chars))
    manifest = {
        "name": "glyphs100",
        "version": GLYPHS_VERSION,
        "seed": seed,
        "size": size,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "num_classes": len(chars),
        "classes": [
            {"class_id": i, "char": c, "codepoint": f"U+{ord(c):04X}", "name": name, "fonts": list(bank.fonts[i])}
            for i, (c, name) in enumerate(zip(chars, glyph_class_names()))
        ],
        "parameters": generation_parameters(),
    }
    return train, test, manifest


# --- cache -------------------------------------------------------------------------------------


def cache_folder(cache_dir: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """Where :func:`load_glyphs` keeps one generated configuration."""
    return Path(cache_dir) / f"glyphs100-v{GLYPHS_VERSION}-s{seed}-{train_per_class}x{test_per_class}"


def _check_cached(arrays: dict, manifest: dict, train_per_class: int, test_per_class: int, seed: int) -> str | None:
    """Why a cache entry that passed its checksum still does not match the request, or None."""
    n = len(CLASS_CHARS)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if images is None or labels is None:
            return f"{split} arrays missing"
        if images.dtype != np.uint8 or images.shape != (n * per_class, 32, 32, 3):
            return f"{split} images are {images.dtype} {images.shape}"
        if labels.dtype != np.int64 or not np.array_equal(labels, np.repeat(np.arange(n), per_class)):
            return f"{split} labels do not match"
    expected = {"version": GLYPHS_VERSION, "seed": seed, "size": 32, "train_per_class": train_per_class,
                "test_per_class": test_per_class, "num_classes": n}
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"manifest {key} is {manifest.get(key)!r}, expected {value!r}"
    if [c.get("char") for c in manifest.get("classes", [])] != list(CLASS_CHARS):
        return "manifest classes do not match"
    return None


def load_glyphs(cache_dir: Path, train_per_class: int, test_per_class: int, seed: int = 0,
                log: Callable[[str], None] = print) -> tuple[ImageArray, ImageArray, dict]:
    """glyphs100 at 32 px, generated on first use and cached under
    ``cache_dir/glyphs100-v{VERSION}-s{seed}-{train}x{test}/`` (``data.npz`` with its checksum
    sidecar, and ``manifest.json``). A damaged cache (checksum mismatch, truncated or missing
    file, contents that do not match the request) is reported through ``log`` and rebuilt."""
    folder = cache_folder(cache_dir, train_per_class, test_per_class, seed)
    data_path, manifest_path = folder / "data.npz", folder / "manifest.json"
    if folder.exists():
        problem = None
        arrays = load_arrays(data_path)
        if arrays is None:
            if not data_path.exists():
                problem = "data file missing"
            elif not data_path.with_name(data_path.name + ".sha256").exists():
                problem = "checksum file missing"
            else:
                problem = "checksum mismatch"
        else:
            try:
                manifest = json.loads(manifest_path.read_text())
                problem = _check_cached(arrays, manifest, train_per_class, test_per_class, seed)
            except FileNotFoundError:
                problem = "manifest missing"
            except (ValueError, AttributeError):  # not JSON, or not a JSON object
                problem = "manifest unreadable"
            if problem is None:
                train = ImageArray(arrays["train_images"], arrays["train_labels"])
                test = ImageArray(arrays["test_images"], arrays["test_labels"])
                return train, test, manifest
        log(f"glyphs100: cache at {folder} is corrupted ({problem}); regenerating")
    total = len(CLASS_CHARS) * (train_per_class + test_per_class)
    log(f"glyphs100: generating {total} images ({train_per_class} train + {test_per_class} test per class, "
        f"seed {seed}) into {folder}")
    start = time.perf_counter()
    train, test, manifest = generate_glyphs(train_per_class, test_per_class, seed=seed)
    save_arrays(data_path, {"train_images": train.images, "train_labels": train.labels,
                            "test_images": test.images, "test_labels": test.labels})
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    log(f"glyphs100: generated in {time.perf_counter() - start:.1f}s")
    return train, test, manifest
