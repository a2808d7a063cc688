"""A dataset family: how one real dataset is found, checked, indexed and described on disk.

Each family (CIFAR-100, miniImageNet, CUB-200-2011) is one module of :mod:`fscil_bench.data`
holding a :class:`DatasetFamily` subclass. The same object serves every consumer:

* loading a benchmark (:mod:`fscil_bench.benchmarks.real`): find the root, check the layout,
  index both splits, check the files, decode (or read) the images;
* ``fscil-bench data verify`` (:mod:`fscil_bench.benchmarks.verify`): the same steps, reported
  one by one instead of stopping at the first problem;
* the schedule builder (``scripts/build_schedules.py``): import the standard index lists, which
  each family writes in its own format (:meth:`DatasetFamily.import_lists`).

Adding a family is one module with a subclass, one row in :data:`fscil_bench.data.families.FAMILIES`
and in the benchmark table (:mod:`fscil_bench.benchmarks.real`), and its schedule file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fscil_bench.data.image_files import (
    DatasetError,
    SplitIndex,
    describe_missing,
    missing_files,
)
from fscil_bench.schedules.files import SessionEntry


@dataclass(frozen=True)
class DatasetIndex:
    """Both splits of a dataset as listed on disk.

    Attributes:
        folder: the dataset's own folder (``.../cifar-100-python``, ``.../CUB_200_2011``).
        train, test: the splits' indexes (sample ids, labels in the dataset's class order, files).
        images: splits whose images come with the index itself (CIFAR's pickles hold the pixels);
            other splits are decoded from their files.
    """

    folder: Path
    train: SplitIndex
    test: SplitIndex
    images: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ListFacts:
    """Facts about a dataset that lists naming samples by bare index cannot state themselves
    (CIFAR-100's format); the defaults are CIFAR-100's."""

    num_classes: int = 100
    base_classes: int = 60
    train_per_class: int = 500
    test_per_class: int = 100


@dataclass(frozen=True)
class ImportedLists:
    """What a family reads from a folder of standard index lists.

    Attributes:
        sessions: one entry per ``session_N.txt``, base session first.
        expected: facts about the dataset the lists were made for (images per class, totals),
            checked later by ``data verify``.
        class_names: the dataset's name of each global class id (None when labels are ids).
    """

    sessions: list[SessionEntry]
    expected: dict[str, Any]
    class_names: list[str] | None


class DatasetFamily:
    """Base class of a dataset family. Subclasses set the class attributes and implement
    :meth:`index` and :meth:`import_lists`; the other steps are shared.

    Class attributes:
        name: the family's id (``cifar100``), also the name of its shipped schedule.
        title: its name in messages (``CIFAR-100``).
        folder: the dataset's folder under a data root (``cifar-100-python``).
        markers: files or folders whose presence says a folder *is* the dataset's folder, so a
            data root may point straight at it.
        required: paths (relative to the folder) that must exist; ``check_layout`` names the
            missing ones.
        layout: ``expected_layout``'s description, with ``{folder}`` for the folder.
        source: where the data come from (named in every "not found" message).
        stored_size: the side of the square images as cached (None: stored as read).
        fit: how decoded images are fitted to ``stored_size`` (see :mod:`fscil_bench.data.image_files`).
        sample_ids: what a sample id is, in words (written into schedule files).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    folder: ClassVar[str]
    markers: ClassVar[tuple[str, ...]]
    required: ClassVar[tuple[str, ...]]
    layout: ClassVar[str]
    source: ClassVar[str]
    stored_size: ClassVar[int]
    fit: ClassVar[str | None] = None
    sample_ids: ClassVar[str]

    # --- finding and checking ------------------------------------------------------------------

    def find_root(self, data_root: Path) -> Path:
        """The dataset's folder: ``data_root`` itself when it is one (named so, or holding the
        markers), else ``data_root / folder``."""
        data_root = Path(data_root)
        if data_root.name.lower() == self.folder.lower():
            return data_root
        if not (data_root / self.folder).exists() and all((data_root / m).exists() for m in self.markers):
            return data_root
        return data_root / self.folder

    def expected_layout(self, folder: Path) -> str:
        return self.layout.format(folder=folder)

    def check_layout(self, data_root: Path) -> Path:
        """The dataset's folder; raises :class:`DatasetError` naming what is missing."""
        folder = self.find_root(data_root)
        missing = [folder / rel for rel in self.required if not (folder / rel).exists()]
        if missing:
            what = "the folder itself" if not folder.is_dir() else ", ".join(map(str, missing))
            raise DatasetError(f"{self.title} not found: expected {self.expected_layout(folder)}; missing {what}. "
                               f"Get it from: {self.source}")
        return folder

    def index(self, folder: Path) -> DatasetIndex:
        """Read the index files of both splits (no image is decoded). Raises :class:`DatasetError`."""
        raise NotImplementedError

    def missing_files(self, index: DatasetIndex) -> list[tuple[SplitIndex, str | None]]:
        """Per split that lists image files: ``(split, None)`` when all exist, else
        ``(split, sentence naming the missing ones)``. Splits read with the index are left out."""
        out = []
        for split in (index.train, index.test):
            if split.files is None:
                continue
            missing = missing_files(split.files)
            out.append((split, None if not missing else
                        f"{describe_missing(missing, split.source, len(split))} (expected under "
                        f"{index.folder / 'images'}; get them from: {self.source})"))
        return out

    def check_files(self, index: DatasetIndex) -> None:
        """Raise naming the image files the index lists that are not on disk."""
        for _, problem in self.missing_files(index):
            if problem is not None:
                raise DatasetError(f"{self.title}: {problem}")

    def download(self, data_root: Path, log: Callable[[str], None] = print) -> Path:
        """Fetch the dataset into ``data_root`` (needs a network); most families cannot."""
        raise DatasetError(f"{self.title} cannot be downloaded automatically; get it from: {self.source}")

    # --- index lists ---------------------------------------------------------------------------

    def list_extras(self, lists_dir: Path) -> list[Path]:
        """Files besides ``session_N.txt`` that the lists of this family need (checksummed too)."""
        return []

    def import_lists(self, lists: list[Path], lists_dir: Path, facts: ListFacts) -> ImportedLists:
        """Read the standard index lists ``lists`` (``session_1.txt`` first) of this family.
        Raises :class:`fscil_bench.schedules.lists.IndexListError`."""
        raise NotImplementedError
