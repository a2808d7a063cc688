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

The classes and fonts are in :mod:`fscil_bench.data.glyph_classes`, the renderer in
:mod:`fscil_bench.data.glyph_render`; this module generates the splits and caches them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fscil_bench.cache import atomic_write_text, load_arrays, save_arrays, sidecar
from fscil_bench.data.arrays import ImageArray
from fscil_bench.data.glyph_classes import (
    CLASS_CHARS,
    glyph_class_names,
    glyph_classes,
    mask_bank,
)
from fscil_bench.data.glyph_render import _generate_split, generation_parameters

GLYPHS_VERSION: int = 1

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
    bank = mask_bank(tuple(chars))
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
            elif not sidecar(data_path).exists():
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
