"""ImageFolder-style data sets: ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``.

Images are ``.jpg``, ``.jpeg``, ``.png``, ``.bmp`` or ``.webp`` files (any case). Class ids follow
``class_order`` when given, else the sorted names of the ``train`` sub-folders. The sample id of an
image is its path relative to the split folder (``<class>/<file>``). Images are stored at
``size`` x ``size`` (shorter side resized to ``size``, then the centre square), decoded once and
cached like the real data sets (:mod:`fscil_bench.data.image_files`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fscil_bench.data.image_files import DatasetError, SplitIndex

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FIT = "short_side_crop"


def expected_layout(root: Path) -> str:
    return f"{root}/train/<class>/<image> and {root}/test/<class>/<image> (.jpg, .jpeg, .png, .bmp or .webp)"


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS
                  and not p.name.startswith("."))


def index_split(root: Path, split: str, class_order: Sequence[str] | None = None) -> SplitIndex:
    """Index ``root/split``; for ``test``, pass the train split's class names as ``class_order``."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"image folder data set not found: expected {expected_layout(root)}; missing {split_dir}")
    folders = _class_folders(split_dir)
    if not folders:
        raise DatasetError(f"{split_dir} has no class folders; expected {expected_layout(root)}")
    if class_order is None:
        classes = folders
    else:
        classes = list(class_order)
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DatasetError(f"{split_dir} has class folder(s) {', '.join(unknown[:5])} that are not among the "
                               f"{len(classes)} classes of the training split / class order")
        if split == "train":
            absent = [c for c in classes if c not in folders]
            if absent:
                raise DatasetError(f"class order names {', '.join(absent[:5])}, but {split_dir} has no such folder")
    ids, labels, files = [], [], []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        images = _images(folder)
        if not images and split == "train":
            raise DatasetError(f"class folder {folder} holds no images ({', '.join(EXTENSIONS)})")
        for path in images:
            ids.append(f"{name}/{path.name}")
            labels.append(label)
            files.append(path)
    return SplitIndex("image_folder", split, ids, np.array(labels, dtype=np.int64), list(classes), files, split_dir)
