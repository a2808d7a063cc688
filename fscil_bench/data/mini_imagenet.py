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
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fscil_bench.data.family import (
    DatasetFamily,
    DatasetIndex,
    ImportedLists,
    ListFacts,
)
from fscil_bench.data.image_files import DatasetError, SplitIndex
from fscil_bench.schedules.lists import IndexListError, per_class, sessions_from_lists

SOURCE = ("the miniImageNet package used by FSCIL papers (the TOPIC/CEC release: images/ holding the 60,000 "
          "84x84 JPEGs and split/{train,test}.csv), derived from ImageNet (https://image-net.org) under its terms")


def read_csv(path: Path, error: type[Exception] = DatasetError) -> list[tuple[str, str, int]]:
    """``(filename, wnid, line number)`` rows of a split CSV (``filename,label`` header); problems
    raise ``error`` naming the file and line."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError as exc:
        raise error(f"miniImageNet split file {path} is missing; expected "
                    f"{FAMILY.expected_layout(path.parent.parent)}. Get it from: {SOURCE}") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise error(f"cannot read miniImageNet split file {path}: {exc}; expected CSV rows filename,label") from exc
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise error(f"miniImageNet split file {path} should start with the header 'filename,label', "
                    f"found {','.join(rows[0]) if rows else 'an empty file'!r}")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise error(f"miniImageNet split file {path} line {number}: expected 'filename,label', "
                        f"found {','.join(row)!r}")
        out.append((row[0].strip(), row[1].strip(), number))
    if not out:
        raise error(f"miniImageNet split file {path} lists no images")
    return out


class MiniImageNet(DatasetFamily):
    name = "mini_imagenet"
    title = "miniImageNet"
    folder = "miniimagenet"
    markers = ("split",)
    required = ("images", "split/train.csv", "split/test.csv")
    layout = "{folder}/images/<file>.jpg and {folder}/split/{{train,test}}.csv (filename,label)"
    source = SOURCE
    stored_size = 84
    fit = "squash"
    sample_ids = "image file name in miniimagenet/images/ (as listed in split/train.csv)"

    def index_split(self, folder: Path, split: str, classes: list[str] | None = None) -> SplitIndex:
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
                raise DatasetError(f"miniImageNet split file {path} line {number} names class {wnid!r}, which is not "
                                   f"one of the {len(classes)} classes of the training split (train.csv) and schedule")
            if name in seen:
                raise DatasetError(f"miniImageNet split file {path} lists {name} twice (lines {seen[name]} and {number})")
            seen[name] = number
            labels[i] = position[wnid]
        files = [folder / "images" / name for name, _, _ in rows]
        return SplitIndex("mini_imagenet", split, [name for name, _, _ in rows], labels, list(classes), files, path)

    def index(self, folder: Path) -> DatasetIndex:
        train = self.index_split(folder, "train")
        return DatasetIndex(folder, train, self.index_split(folder, "test", classes=train.class_names))

    def list_extras(self, lists_dir: Path) -> list[Path]:
        return [lists_dir / n for n in ("train.csv", "test.csv") if (lists_dir / n).is_file()]

    def import_lists(self, lists: list[Path], lists_dir: Path, facts: ListFacts) -> ImportedLists:
        """Lines are paths ``.../<wnid>/<file>.jpg`` (the file name is the sample id); ``train.csv``
        beside the lists fixes every image's class and the class order (first appearance), and an
        optional ``test.csv`` the test counts. The base session is the rule "all training samples"
        when its list holds every image ``train.csv`` gives the base classes."""
        train_csv = lists_dir / "train.csv"
        if not train_csv.is_file():
            raise IndexListError(f"mini_imagenet lists need train.csv (filename,label) beside the session lists in "
                                 f"{lists_dir}: it fixes each image's class and the class order")
        rows = read_csv(train_csv, IndexListError)
        order = list(dict.fromkeys(wnid for _, wnid, _ in rows))
        position = {w: i for i, w in enumerate(order)}
        class_of = {}
        for fname, wnid, number in rows:
            if fname in class_of:
                raise IndexListError(f"{train_csv} line {number} lists {fname} a second time")
            class_of[fname] = position[wnid]
        train_counts = Counter(class_of.values())

        def sample_of(path: Path, number: int, text: str) -> tuple[str, int]:
            parts = text.replace("\\", "/").split("/")
            name = parts[-1]
            if name not in class_of:
                raise IndexListError(f"index list {path} line {number}: image {name} is not in {train_csv}")
            c = class_of[name]
            if len(parts) >= 2 and parts[-2] != order[c]:
                raise IndexListError(f"index list {path} line {number}: {text} sits under class folder "
                                     f"{parts[-2]}, but {train_csv} gives it class {order[c]}")
            return name, c

        def every_base_image(ids: list[str], ways: int) -> bool:
            return set(ids) == {n for n, c in class_of.items() if c < ways}

        sessions = sessions_from_lists(lists, sample_of, every_base_image)
        num_classes = sum(s.ways for s in sessions)
        if num_classes != len(order):
            raise IndexListError(f"the lists in {lists_dir} cover {num_classes} classes, but {train_csv} has "
                                 f"{len(order)}; a schedule covers every class of its data set")
        expected: dict[str, Any] = {"train_per_class": per_class([train_counts[c] for c in range(num_classes)])}
        test_csv = lists_dir / "test.csv"
        if test_csv.is_file():
            test_rows = read_csv(test_csv, IndexListError)
            unknown = [(wnid, n) for _, wnid, n in test_rows if wnid not in position]
            if unknown:
                raise IndexListError(f"{test_csv} line {unknown[0][1]} names class {unknown[0][0]}, which {train_csv} lacks")
            test_counts = Counter(position[wnid] for _, wnid, _ in test_rows)
            expected["test_per_class"] = per_class([test_counts[c] for c in range(num_classes)])
        return ImportedLists(sessions, expected, order[:num_classes])


FAMILY = MiniImageNet()
