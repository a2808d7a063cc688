"""CUB-200-2011 in its official layout: ``<data_root>/CUB_200_2011/`` with ``images.txt``
(``<image id> <NNN.Name>/<file>.jpg``), ``train_test_split.txt`` (``<image id> <1 train | 0 test>``),
``image_class_labels.txt`` (``<image id> <class 1..200>``) and ``images/<NNN.Name>/<file>.jpg``.

Class id = folder number - 1 (label order). The train and test splits are the official ones. The
sample id of an image is its path relative to ``images/`` (``001.Black_footed_Albatross/
Black_Footed_Albatross_0041_796108.jpg``): the standard FSCIL index lists name images by that
path, and it says which class it belongs to.

Stored size: 256 x 256, made once at decode time by resizing the shorter side to 256 and taking
the centre square. The standard test transform (resize 256, centre crop 224) gives exactly the
same pixels from it. The standard train transform resizes to 256 and takes random resized crops
of the whole (non-square) image; here they are taken from the centre 256 x 256 square, so crops
never reach the outer parts of the longer side. This keeps every split one fixed-size array.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fscil_bench.data.family import (
    DatasetFamily,
    DatasetIndex,
    ImportedLists,
    ListFacts,
)
from fscil_bench.data.image_files import DatasetError, SplitIndex
from fscil_bench.schedules.lists import IndexListError, sessions_from_lists

NUM_CLASSES = 200

SOURCE = ("CUB-200-2011 (CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/, "
          "extracted under the data root)")

#: Facts about the full CUB-200-2011 data set (official split), checked by ``data verify``.
FULL_DATASET = {"num_images": 11788, "train_total": 5994, "test_total": 5794}

_CLASS_FOLDER = re.compile(r"^(\d{3})\.(.+)$")


def read_pairs(path: Path) -> dict[int, str]:
    """``<image id> <value>`` lines -> {id: value}."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(f"CUB-200-2011 file {path} is missing; expected {FAMILY.expected_layout(path.parent)}. "
                           f"Get it from: {SOURCE}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"cannot read CUB-200-2011 file {path}: {exc}") from exc
    out: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"CUB-200-2011 file {path} line {number}: expected '<image id> <value>', found {line!r}")
        key = int(parts[0])
        if key in out:
            raise DatasetError(f"CUB-200-2011 file {path} line {number}: image id {key} appears twice")
        out[key] = parts[1].strip()
    if not out:
        raise DatasetError(f"CUB-200-2011 file {path} is empty")
    return out


def parse_class_folder(name: str) -> tuple[int, str] | None:
    """``"017.Cardinal"`` -> ``(16, "017.Cardinal")`` (class id, folder); ``None`` if not that form."""
    m = _CLASS_FOLDER.match(name)
    return (int(m.group(1)) - 1, name) if m else None


class Cub200(DatasetFamily):
    name = "cub200"
    title = "CUB-200-2011"
    folder = "CUB_200_2011"
    markers = ("images.txt",)
    required = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "images")
    layout = ("{folder}/{{images.txt,train_test_split.txt,image_class_labels.txt}} and "
              "{folder}/images/<NNN.Name>/<file>.jpg")
    source = SOURCE
    stored_size = 256
    fit = "short_side_crop"
    sample_ids = "image path relative to CUB_200_2011/images/, '<NNN.Name>/<file>.jpg' (as in images.txt)"

    def index(self, folder: Path) -> DatasetIndex:
        """The official train and test splits, in ``images.txt`` order."""
        images = read_pairs(folder / "images.txt")
        split = read_pairs(folder / "train_test_split.txt")
        labels = read_pairs(folder / "image_class_labels.txt")
        for name, table in (("train_test_split.txt", split), ("image_class_labels.txt", labels)):
            if table.keys() != images.keys():
                odd = sorted(table.keys() ^ images.keys())[:3]
                raise DatasetError(f"CUB-200-2011 file {folder / name} does not cover the same image ids as "
                                   f"{folder / 'images.txt'} (e.g. id {', '.join(map(str, odd))})")
        names: dict[int, str] = {}
        rows = {"train": [], "test": []}
        for image_id, rel in images.items():
            parts = rel.split("/")
            parsed = parse_class_folder(parts[0]) if len(parts) == 2 else None
            if parsed is None:
                raise DatasetError(f"CUB-200-2011 file {folder / 'images.txt'}: image {image_id} path {rel!r} is not "
                                   f"'<NNN.Name>/<file>.jpg'")
            class_id, class_folder = parsed
            label = labels[image_id]
            if not label.isdigit() or int(label) - 1 != class_id:
                raise DatasetError(f"CUB-200-2011 file {folder / 'image_class_labels.txt'}: image {image_id} has class "
                                   f"{label!r} but lives in folder {class_folder} (class {class_id + 1})")
            if not 0 <= class_id < NUM_CLASSES:
                raise DatasetError(f"CUB-200-2011 file {folder / 'images.txt'}: image {image_id} is in folder {class_folder}, "
                                   f"outside classes 001..{NUM_CLASSES:03d}")
            if names.setdefault(class_id, class_folder) != class_folder:
                raise DatasetError(f"CUB-200-2011 file {folder / 'images.txt'}: class {class_id + 1} appears under two "
                                   f"folders, {names[class_id]} and {class_folder}")
            flag = split[image_id]
            if flag not in ("0", "1"):
                raise DatasetError(f"CUB-200-2011 file {folder / 'train_test_split.txt'}: image {image_id} has split flag "
                                   f"{flag!r}, expected 1 (train) or 0 (test)")
            rows["train" if flag == "1" else "test"].append((rel, class_id))
        num = max(names) + 1
        class_names = [names.get(c, f"{c + 1:03d}.<absent>") for c in range(num)]
        out = []
        for split_name in ("train", "test"):
            ids = [rel for rel, _ in rows[split_name]]
            lab = np.array([c for _, c in rows[split_name]], dtype=np.int64)
            files = [folder / "images" / rel for rel in ids]
            out.append(SplitIndex("cub200", split_name, ids, lab, class_names, files, folder / "images.txt"))
        return DatasetIndex(folder, out[0], out[1])

    def import_lists(self, lists: list[Path], lists_dir: Path, facts: ListFacts) -> ImportedLists:
        """Lines are paths ``.../images/<NNN.Name>/<file>.jpg``; the sample id is ``<NNN.Name>/<file>.jpg``
        and the class id ``NNN - 1``. The lists cannot prove that the base list is the whole train
        split (which lives in the dataset), so the base session is listed sample by sample."""
        names: dict[int, str] = {}

        def sample_of(path: Path, number: int, text: str) -> tuple[str, int]:
            parts = text.replace("\\", "/").split("/")
            parsed = parse_class_folder(parts[-2]) if len(parts) >= 2 else None
            if parsed is None:
                raise IndexListError(f"index list {path} line {number}: expected a path ending in "
                                     f"'<NNN.Name>/<file>.jpg', found {text!r}")
            c, folder = parsed
            if names.setdefault(c, folder) != folder:
                raise IndexListError(f"index list {path} line {number}: class {c + 1:03d} is named {folder}, "
                                     f"elsewhere {names[c]}")
            return f"{folder}/{parts[-1]}", c

        sessions = sessions_from_lists(lists, sample_of, lambda ids, ways: False)
        first = sum(s.ways for s in sessions)
        expected = dict(FULL_DATASET) if first == NUM_CLASSES else {}
        return ImportedLists(sessions, expected, [names[c] for c in range(first)])


FAMILY = Cub200()
