"""miniImageNet in the layout FSCIL papers use: ``<data_root>/miniimagenet/images/<file>.jpg`` and
``<data_root>/miniimagenet/split/{train,test}.csv``.

Each CSV has a header ``filename,label`` and one row per image; ``label`` is the ImageNet wnid.
Class ids follow the order in which wnids first appear in ``train.csv`` (sorted wnid order in the
standard split); ``test.csv`` may only name classes of ``train.csv``. The sample id of an image is
its file name (``n0153282900000005.jpg``), as the standard FSCIL index lists use.

Stored size: 84 x 84, the size of the images in the miniImageNet release (any other size is
resized to 84 x 84, as the release did). The train transform crops from these 84 px images; the
test transform resizes them to 92 and centre-crops 84, on the fly.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .image_files import DatasetError, SplitIndex, describe_missing, missing_files

FOLDER = "miniimagenet"
STORED_SIZE = 84
FIT = "squash"

SOURCE = ("the miniImageNet package used by FSCIL papers (the TOPIC/CEC release: images/ holding the 60,000 "
          "84x84 JPEGs and split/{train,test}.csv), derived from ImageNet (https://image-net.org) under its terms")


def find_root(data_root: Path) -> Path:
    data_root = Path(data_root)
    if data_root.name.lower() == FOLDER or (not (data_root / FOLDER).exists() and (data_root / "split").is_dir()):
        return data_root
    return data_root / FOLDER


def expected_layout(folder: Path) -> str:
    return f"{folder}/images/<file>.jpg and {folder}/split/{{train,test}}.csv (filename,label)"


def check_layout(data_root: Path) -> Path:
    folder = find_root(data_root)
    needed = [folder / "images", folder / "split" / "train.csv", folder / "split" / "test.csv"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        what = "the folder itself" if not folder.is_dir() else ", ".join(map(str, missing))
        raise DatasetError(f"miniImageNet not found: expected {expected_layout(folder)}; missing {what}. "
                           f"Get it from: {SOURCE}")
    return folder


def read_csv(path: Path) -> list[tuple[str, str, int]]:
    """``(filename, wnid, line number)`` rows of a split CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError as exc:
        raise DatasetError(f"miniImageNet split file {path} is missing; expected {expected_layout(path.parent.parent)}. "
                           f"Get it from: {SOURCE}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read miniImageNet split file {path}: {exc}; expected CSV rows filename,label") from exc
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DatasetError(f"miniImageNet split file {path} should start with the header 'filename,label', "
                           f"found {','.join(rows[0]) if rows else 'an empty file'!r}")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"miniImageNet split file {path} line {number}: expected 'filename,label', "
                               f"found {','.join(row)!r}")
        out.append((row[0].strip(), row[1].strip(), number))
    if not out:
        raise DatasetError(f"miniImageNet split file {path} lists no images")
    return out


def index_split(folder: Path, split: str, classes: list[str] | None = None) -> SplitIndex:
    """Index ``split`` from its CSV. ``classes`` (wnids in class-id order) defaults to the order of
    first appearance in the CSV itself; a row naming a wnid outside ``classes`` is an error."""
    path = folder / "split" / f"{split}.csv"
    rows = read_csv(path)
    if classes is None:
        classes = list(dict.fromkeys(wnid for _, wnid, _ in rows))
    position = {w: i for i, w in enumerate(classes)}
    labels = np.empty(len(rows), dtype=np.int64)
    seen: dict[str, int] = {}
    for i, (name, wnid, number) in enumerate(rows):
        if wnid not in position:
            raise DatasetError(f"miniImageNet split file {path} line {number} names class {wnid!r}, which is not one "
                               f"of the {len(classes)} classes of the training split (train.csv) and schedule")
        if name in seen:
            raise DatasetError(f"miniImageNet split file {path} lists {name} twice (lines {seen[name]} and {number})")
        seen[name] = number
        labels[i] = position[wnid]
    files = [folder / "images" / name for name, _, _ in rows]
    return SplitIndex("mini_imagenet", split, [name for name, _, _ in rows], labels, list(classes), files, path)


def check_files(index: SplitIndex) -> None:
    """Raise naming the missing images, if any."""
    missing = missing_files(index.files or [])
    if missing:
        raise DatasetError(f"miniImageNet: {describe_missing(missing, index.source, len(index))}. "
                           f"Expected every image under {index.source.parent.parent / 'images'}; get them from: {SOURCE}")
