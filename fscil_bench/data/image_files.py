"""Image files on disk -> decoded uint8 arrays, decoded once and cached.

The real datasets (miniImageNet, CUB-200-2011, ImageFolder-style custom sets) are folders of
JPEG/PNG files of varying size. Decoding tens of thousands of JPEGs on every run would dominate
a benchmark run, so each split is decoded once, at a fixed stored size, into one uint8 array
``(N, size, size, 3)`` saved as a checked ``.npy`` entry (:mod:`fscil_bench.cache`) under
``<cache_dir>/datasets/<dataset>/``. Later runs memory-map that file after checking its digest; a
file that fails the check is decoded again.

The cache key is the dataset, the split, the stored size, how images are fitted to it, and a
fingerprint of the ordered list of source files (relative path, byte size and modification
time), so a changed dataset never reads a stale cache: a file replaced by one of the same size
still carries a new modification time.

Fitting an image to the stored ``size`` (see :func:`fit_image`):

- ``"squash"``: resize to ``size`` x ``size`` regardless of aspect (miniImageNet, whose release
  images are already 84 x 84);
- ``"short_side_crop"``: resize so the shorter side is ``size`` (bilinear, antialiased), then take
  the centre ``size`` x ``size`` square (CUB-200 and custom ImageFolder sets).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fscil_bench.cache import remove_checked, stable_hash, verified, write_checked

#: Bump when the decode or fit code changes what pixels come out (invalidates every image cache).
DECODE_VERSION = 1

FIT_MODES = ("squash", "short_side_crop")


class DatasetError(RuntimeError):
    """A dataset on disk that is missing or malformed; the message says what was expected where."""


@dataclass(frozen=True)
class SplitIndex:
    """One split of a dataset as listed on disk, before any image is decoded.

    Attributes:
        dataset: the dataset's short name (``cifar100``, ``mini_imagenet``, ``cub200``, ...).
        split: ``"train"`` or ``"test"``.
        ids: the stable sample id of each sample, in pool order.
        labels: int64 class ids in the dataset's own class order (see ``class_names``).
        class_names: the dataset's name for each class id.
        files: the image file of each sample, or ``None`` when the images sit inside the index
            file itself (CIFAR's pickles).
        source: the file the index was read from (named in messages).
    """

    dataset: str
    split: str
    ids: list
    labels: np.ndarray
    class_names: list[str]
    files: list[Path] | None
    source: Path

    def __len__(self) -> int:
        return len(self.ids)


def missing_files(files: Sequence[Path]) -> list[Path]:
    """The files of ``files`` that do not exist (one ``stat`` each)."""
    return [f for f in files if not os.path.isfile(f)]


def describe_missing(missing: Sequence[Path], listed_in: Path, total: int, show: int = 3) -> str:
    """One sentence naming the first missing files."""
    names = ", ".join(str(p) for p in missing[:show])
    more = f" and {len(missing) - show} more" if len(missing) > show else ""
    return f"{len(missing)} of the {total} images listed in {listed_in} are missing: {names}{more}"


def fit_image(image, size: int, fit: str):
    """Resize a PIL image to ``size`` x ``size`` RGB as ``fit`` says (see the module docstring)."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    if fit == "squash":
        if (w, h) != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return image
    if fit != "short_side_crop":
        raise ValueError(f"unknown fit {fit!r}; choose from {FIT_MODES}")
    if w <= h:
        new_w, new_h = size, max(size, int(size * h / w))
    else:
        new_w, new_h = max(size, int(size * w / h)), size
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def decode_image(path: Path, size: int, fit: str) -> np.ndarray:
    """Decode one image file to uint8 ``(size, size, 3)``; a broken file raises :class:`DatasetError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(fit_image(image, size, fit), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DatasetError(f"image {path} is missing") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode image {path} ({type(exc).__name__}: {exc}); the file is damaged "
                           f"or not an image - replace it from the dataset's archive") from exc


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_images(files: Sequence[Path], size: int, fit: str, out: np.ndarray | None = None, workers: int | None = None,
                  desc: str = "decoding", chunk: int = 64) -> np.ndarray:
    """Decode ``files`` into ``out`` (or a new array) ``(N, size, size, 3)`` uint8, on ``workers``
    threads (Pillow releases the GIL while decoding and resizing), with a progress bar on a
    terminal."""
    from tqdm.auto import tqdm

    n = len(files)
    if out is None:
        out = np.empty((n, size, size, 3), dtype=np.uint8)
    workers = workers or default_workers()

    def work(start: int) -> int:
        stop = min(n, start + chunk)
        for i in range(start, stop):
            out[i] = decode_image(files[i], size, fit)
        return stop - start

    bar = tqdm(total=n, desc=desc, unit="img", leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)
    try:
        if workers == 1:
            for start in range(0, n, chunk):
                bar.update(work(start))
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(work, range(0, n, chunk)):
                    bar.update(done)
    finally:
        bar.close()
    return out


def files_fingerprint(files: Sequence[Path], root: Path) -> str:
    """A digest of the ordered file list: each file's path relative to ``root``, its byte size and
    its modification time (ns)."""
    entries = []
    for f in files:
        try:
            rel = str(Path(f).relative_to(root))
        except ValueError:
            rel = str(f)
        info = os.stat(f)
        entries.append([rel, info.st_size, info.st_mtime_ns])
    return stable_hash(entries, length=16)


def cache_path(cache_dir: Path, dataset: str, split: str, size: int, fit: str, fingerprint: str) -> Path:
    """``<cache_dir>/datasets/<dataset>/<split>-<size>px-<fit>-<fingerprint>.npy``."""
    return Path(cache_dir) / "datasets" / dataset / f"{split}-{size}px-{fit}-v{DECODE_VERSION}-{fingerprint}.npy"


def load_cached_images(path: Path) -> np.ndarray | None:
    """Memory-map a cached image array after checking its digest; ``None`` if absent or corrupt."""
    if not verified(path):
        return None
    try:
        # copy-on-write: writable in this process (torch.from_numpy stays quiet), the file never changes
        images = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        return None
    return images


def load_images_cached(
    files: Sequence[Path],
    *,
    root: Path,
    dataset: str,
    split: str,
    size: int,
    fit: str,
    cache_dir: Path,
    log: Callable[[str], None] = print,
    workers: int | None = None,
) -> np.ndarray:
    """The decoded images of ``files`` (in order), from the cache when it holds them.

    A cache miss decodes every file into a temporary ``.npy`` beside the final name, records
    its digest and renames it into place; entries of the same dataset, split and size with
    another fingerprint (an older copy of the data) are removed.
    """
    if fit not in FIT_MODES:
        raise ValueError(f"unknown fit {fit!r}; choose from {FIT_MODES}")
    if not files:
        return np.empty((0, size, size, 3), dtype=np.uint8)
    path = cache_path(cache_dir, dataset, split, size, fit, files_fingerprint(files, root))
    images = load_cached_images(path)
    if images is not None and len(images) == len(files) and images.shape[1:3] == (size, size):
        return images
    if path.exists():
        log(f"cached {dataset} {split} images at {path} failed their checksum; decoding them again")
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"decoding {len(files)} {dataset} {split} images at {size}x{size} into {path} (once; later runs read the cache)")

    def decode_into(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3))
        decode_images(files, size, fit, out=out, workers=workers, desc=f"decoding {dataset} {split}")
        out.flush()
        del out

    write_checked(path, decode_into)
    prefix = f"{split}-{size}px-{fit}-"
    for old in path.parent.glob(f"{prefix}*.npy"):
        if old != path:
            remove_checked(old)
    images = load_cached_images(path)
    if images is None:  # pragma: no cover - only if the disk changed the file under us
        raise DatasetError(f"the image cache {path} just written does not read back; check the disk")
    return images
