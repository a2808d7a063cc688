"""CIFAR-100 in torchvision's layout: ``<data_root>/cifar-100-python/{train,test,meta}``.

``train`` and ``test`` are Python pickles of dicts holding ``data`` (``(N, 3072)`` uint8 rows,
each the red, green and blue 32 x 32 planes in turn) and ``fine_labels`` (N ints in 0..99);
``meta`` holds ``fine_label_names``. The keys are bytes in the official (Python 2) pickles and
strings in pickles written by Python 3; both are read, as torchvision does. The sample id of a
training image is its index in the ``train`` pickle (the order the standard FSCIL index lists
use). Class ids are the fine labels.

The pickles already hold raw uint8 pixels, so they are read directly on every load (about a
second) rather than cached.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fscil_bench.data.family import (
    DatasetFamily,
    DatasetIndex,
    ImportedLists,
    ListFacts,
)
from fscil_bench.data.image_files import DatasetError, SplitIndex
from fscil_bench.schedules.files import SessionEntry, ids_checksum
from fscil_bench.schedules.lists import (
    IndexListError,
    base_session,
    no_duplicates,
    read_lines,
)

NUM_CLASSES = 100

SOURCE = ("CIFAR-100, python version (cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
          "extracted under the data root), or fetch it with "
          "'fscil-bench data verify --benchmark cifar100 --data-root DIR --download'")


def _field(obj: dict, key: str):
    """``obj[b'key']`` (the official pickles) or ``obj['key']`` (pickles written by Python 3)."""
    return obj.get(key.encode(), obj.get(key))


class Cifar100(DatasetFamily):
    name = "cifar100"
    title = "CIFAR-100"
    folder = "cifar-100-python"
    markers = ("train", "meta")
    required = ("train", "test", "meta")
    layout = "{folder}/{{train,test,meta}} (torchvision's CIFAR-100 pickles)"
    source = SOURCE
    stored_size = 32
    sample_ids = "index into the training array of the official cifar-100-python/train pickle, in file order"

    def _unpickle(self, path: Path) -> dict:
        try:
            with open(path, "rb") as f:
                obj = pickle.load(f, encoding="bytes")
        except FileNotFoundError as exc:
            raise DatasetError(f"CIFAR-100 file {path} is missing; expected {self.expected_layout(path.parent)}. "
                               f"Get it from: {SOURCE}") from exc
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
                UnicodeDecodeError, MemoryError) as exc:
            raise DatasetError(f"cannot read CIFAR-100 file {path}: truncated or not a CIFAR-100 pickle "
                               f"({type(exc).__name__}: {exc}); extract it again from {SOURCE}") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"CIFAR-100 file {path} holds a {type(obj).__name__}, expected a dict "
                               f"(torchvision's pickle format); extract it again from {SOURCE}")
        return obj

    def class_names(self, folder: Path) -> list[str]:
        """The 100 fine label names from ``meta``."""
        path = folder / "meta"
        names = _field(self._unpickle(path), "fine_label_names")
        if not isinstance(names, list):
            raise DatasetError(f"CIFAR-100 file {path} lacks 'fine_label_names'; expected torchvision's meta pickle")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def read_split(self, folder: Path, split: str, names: list[str]) -> tuple[np.ndarray, SplitIndex]:
        """Read ``train`` or ``test``: images ``(N, 32, 32, 3)`` and the split's index."""
        path = folder / split
        obj = self._unpickle(path)
        data, labels = _field(obj, "data"), _field(obj, "fine_labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DatasetError(f"CIFAR-100 file {path}: 'data' should be a uint8 array (N, 3072), found {shape}")
        if labels is None or len(labels) != len(data):
            raise DatasetError(f"CIFAR-100 file {path}: 'fine_labels' should hold {len(data)} labels, "
                               f"found {'none' if labels is None else len(labels)}")
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise DatasetError(f"CIFAR-100 file {path}: fine labels must lie in 0..{NUM_CLASSES - 1}, "
                               f"found {labels.min()}..{labels.max()}")
        images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        return images, SplitIndex("cifar100", split, list(range(len(labels))), labels, names, None, path)

    def index(self, folder: Path) -> DatasetIndex:
        names = self.class_names(folder)
        train_images, train = self.read_split(folder, "train", names)
        test_images, test = self.read_split(folder, "test", names)
        return DatasetIndex(folder, train, test, {"train": train_images, "test": test_images})

    def download(self, data_root: Path, log: Callable[[str], None] = print) -> Path:
        """Download and extract CIFAR-100 under ``data_root`` with torchvision (needs a network)."""
        from torchvision.datasets import CIFAR100

        data_root = Path(data_root)
        data_root.mkdir(parents=True, exist_ok=True)
        log(f"downloading CIFAR-100 into {data_root / self.folder} (about 170 MB)")
        try:
            CIFAR100(root=str(data_root), train=True, download=True)
        except Exception as exc:  # network errors come in many types
            raise DatasetError(f"could not download CIFAR-100 into {data_root}: {type(exc).__name__}: {exc}. "
                               f"Fetch it by hand: {SOURCE.split(', or')[0]}") from exc
        return data_root / self.folder

    def import_lists(self, lists: list[Path], lists_dir: Path, facts: ListFacts) -> ImportedLists:
        """Lines are integer indices into the ``train`` pickle; the lists alone cannot say which class
        an index has, so the dataset's shape comes from ``facts``. The base session is the rule
        "all training samples" when its list holds ``train_per_class`` distinct indices per base class."""
        pool = facts.num_classes * facts.train_per_class
        parsed = []
        for path in lists:
            lines = read_lines(path)
            ids = []
            for number, text in lines:
                if not text.isdigit():
                    raise IndexListError(f"index list {path} line {number}: expected an integer index into the "
                                         f"CIFAR-100 train pickle, found {text!r}")
                value = int(text)
                if value >= pool:
                    raise IndexListError(f"index list {path} line {number}: index {value} is past the {pool} training images")
                ids.append(value)
            parsed.append((path, ids, lines))
        base_classes, num_classes = facts.base_classes, facts.num_classes
        if not 0 < base_classes < num_classes or (num_classes - base_classes) % (len(lists) - 1):
            raise IndexListError(f"{num_classes - base_classes} incremental classes do not split into {len(lists) - 1} "
                                 f"sessions (num_classes {num_classes}, base_classes {base_classes})")
        ways = (num_classes - base_classes) // (len(lists) - 1)
        path, ids, lines = parsed[0]
        full = base_classes * facts.train_per_class
        if len(ids) > full:
            raise IndexListError(f"index list {path} holds {len(ids)} samples, more than the {full} training images of "
                                 f"{base_classes} base classes")
        sessions = [base_session(path, ids, base_classes, len(ids) == full, lines)]
        first = base_classes
        for t, (path, ids, lines) in enumerate(parsed[1:], start=1):
            if len(ids) % ways:
                raise IndexListError(f"index list {path} holds {len(ids)} samples, not a multiple of {ways} ways")
            no_duplicates(path, ids, lines)
            sessions.append(SessionEntry(t, first, ways, len(ids) // ways, len(ids), ids_checksum(ids), tuple(ids)))
            first += ways
        expected = {"train_per_class": facts.train_per_class, "test_per_class": facts.test_per_class}
        return ImportedLists(sessions, expected, None)


FAMILY = Cifar100()
