"""CIFAR-100 in torchvision's layout: ``<data_root>/cifar-100-python/{train,test,meta}``.

``train`` and ``test`` are Python pickles of dicts holding ``b'data'`` (``(N, 3072)`` uint8 rows,
each the red, green and blue 32 x 32 planes in turn) and ``b'fine_labels'`` (N ints in 0..99);
``meta`` holds ``b'fine_label_names'``. The sample id of a training image is its index in the
``train`` pickle (the order the standard FSCIL index lists use). Class ids are the fine labels.

The pickles already hold raw uint8 pixels, so they are read directly on every load (about a
second) rather than cached.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .arrays import ImageArray
from .image_files import DatasetError, SplitIndex

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
NUM_CLASSES = 100

#: Where the data come from, for messages.
SOURCE = ("CIFAR-100, python version (cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
          "extracted under the data root), or fetch it with "
          "'fscil-bench data verify --benchmark cifar100 --data-root DIR --download'")


def find_root(data_root: Path) -> Path:
    """The ``cifar-100-python`` folder under ``data_root`` (or ``data_root`` itself if it is one)."""
    data_root = Path(data_root)
    if data_root.name == FOLDER or (not (data_root / FOLDER).exists() and (data_root / "train").is_file()
                                   and (data_root / "meta").is_file()):
        return data_root
    return data_root / FOLDER


def expected_layout(folder: Path) -> str:
    return f"{folder}/{{train,test,meta}} (torchvision's CIFAR-100 pickles)"


def check_layout(data_root: Path) -> Path:
    """The dataset folder; raises :class:`DatasetError` naming what is missing."""
    folder = find_root(data_root)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        what = "the folder itself" if not folder.is_dir() else ", ".join(str(folder / m) for m in missing)
        raise DatasetError(f"CIFAR-100 not found: expected {expected_layout(folder)}; missing {what}. "
                           f"Get it from: {SOURCE}")
    return folder


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except FileNotFoundError as exc:
        raise DatasetError(f"CIFAR-100 file {path} is missing; expected {expected_layout(path.parent)}. "
                           f"Get it from: {SOURCE}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            UnicodeDecodeError, MemoryError) as exc:
        raise DatasetError(f"cannot read CIFAR-100 file {path}: truncated or not a CIFAR-100 pickle "
                           f"({type(exc).__name__}: {exc}); extract it again from {SOURCE}") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR-100 file {path} holds a {type(obj).__name__}, expected a dict "
                           f"(torchvision's pickle format); extract it again from {SOURCE}")
    return obj


def class_names(folder: Path) -> list[str]:
    """The 100 fine label names from ``meta``."""
    path = folder / "meta"
    meta = _unpickle(path)
    names = meta.get(b"fine_label_names")
    if not isinstance(names, list):
        raise DatasetError(f"CIFAR-100 file {path} lacks b'fine_label_names'; expected torchvision's meta pickle")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_split(folder: Path, split: str) -> tuple[ImageArray, SplitIndex]:
    """Read ``train`` or ``test``: images ``(N, 32, 32, 3)`` and the split's index."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    path = folder / split
    obj = _unpickle(path)
    data, labels = obj.get(b"data"), obj.get(b"fine_labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"CIFAR-100 file {path}: b'data' should be a uint8 array (N, 3072), found {shape}")
    if labels is None or len(labels) != len(data):
        raise DatasetError(f"CIFAR-100 file {path}: b'fine_labels' should hold {len(data)} labels, "
                           f"found {'none' if labels is None else len(labels)}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"CIFAR-100 file {path}: fine labels must lie in 0..{NUM_CLASSES - 1}, "
                           f"found {labels.min()}..{labels.max()}")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    names = class_names(folder)
    index = SplitIndex("cifar100", split, list(range(len(labels))), labels, names, None, path)
    return ImageArray(images, labels), index


def download(data_root: Path, log: Callable[[str], None] = print) -> Path:
    """Download and extract CIFAR-100 under ``data_root`` with torchvision (needs a network)."""
    from torchvision.datasets import CIFAR100

    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    log(f"downloading CIFAR-100 into {data_root / FOLDER} (about 170 MB)")
    try:
        CIFAR100(root=str(data_root), train=True, download=True)
    except Exception as exc:  # network errors come in many types
        raise DatasetError(f"could not download CIFAR-100 into {data_root}: {type(exc).__name__}: {exc}. "
                           f"Fetch it by hand: {SOURCE.split(', or')[0]}") from exc
    return data_root / FOLDER
