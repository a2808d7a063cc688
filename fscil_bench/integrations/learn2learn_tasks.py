"""Few-shot episode sampling with learn2learn: the only module of fscil-bench that imports it.

:class:`EpisodeSampler` wraps a set of labelled samples in ``learn2learn.data.MetaDataset`` and
draws N-way (K+Q)-shot tasks with ``learn2learn.data.TaskDataset`` and its task transforms
``NWays``, ``KShots``, ``LoadData`` and ``RemapLabels``. learn2learn only picks sample indices:
the dataset it sees yields ``(index, label)`` pairs, and the caller gathers the images or
features of those indices itself, so no image is copied through learn2learn.

learn2learn draws its tasks with Python's global ``random`` module; the sampler keeps its own
``random`` state and swaps it in around each draw, so its episodes are reproducible from a seed
and it neither disturbs nor depends on anyone else's use of ``random``.

Methods import this module inside ``fit_base``: importing fscil_bench never imports learn2learn.
"""

from __future__ import annotations

import contextlib
import io
import random
import warnings
from dataclasses import dataclass

import torch

try:
    # learn2learn imports gym, which prints a deprecation banner on stderr at import time.
    _banner = io.StringIO()
    with contextlib.redirect_stderr(_banner):
        from learn2learn.data import MetaDataset, TaskDataset
        from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "this method needs learn2learn 0.2.0 (see the README's install section: it is built from "
        f"source with --no-deps, then gym==0.26.2): {exc}"
    ) from exc


class _IndexLabelDataset(torch.utils.data.Dataset):
    """Sample ``i`` is ``(i, label_i)``: learn2learn picks indices, the caller loads the data."""

    def __init__(self, labels: list[int]):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, self.labels[i]


@dataclass(frozen=True)
class Episode:
    """One N-way task: ``support[i]`` and ``query[i]`` hold sample indices of ``classes[i]``."""

    classes: torch.Tensor  # (ways,) original labels
    support: torch.Tensor  # (ways, shots) sample indices
    query: torch.Tensor  # (ways, queries) sample indices


class EpisodeSampler:
    """Draws N-way tasks with ``shots`` support and ``queries`` query samples per class.

    Args:
        labels: the label of every sample (any integer ids).
        ways, shots, queries: the task's shape; every class must have ``shots + queries`` samples.
        seed: seeds the sampler's own ``random`` state.
    """

    def __init__(self, labels: torch.Tensor, ways: int, shots: int, queries: int, seed: int):
        label_list = [int(v) for v in labels.tolist()]
        by_label: dict[int, list[int]] = {}
        for i, y in enumerate(label_list):
            by_label.setdefault(y, []).append(i)
        too_small = [y for y, idx in by_label.items() if len(idx) < shots + queries]
        if too_small:
            raise ValueError(f"classes {too_small[:5]} have fewer than shots + queries = {shots + queries} samples")
        if len(by_label) < ways:
            raise ValueError(f"{ways}-way tasks need at least {ways} classes, got {len(by_label)}")
        self.labels = torch.tensor(label_list)
        self.ways, self.shots, self.queries = ways, shots, queries
        dataset = MetaDataset(_IndexLabelDataset(label_list), labels_to_indices=by_label)
        with warnings.catch_warnings():
            # learn2learn 0.2 flags TaskDataset as deprecated in favour of its alias Taskset.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.tasks = TaskDataset(
                dataset,
                task_transforms=[NWays(dataset, ways), KShots(dataset, shots + queries), LoadData(dataset),
                                 RemapLabels(dataset)],
                num_tasks=-1,
            )
        self._state = random.Random(seed).getstate()

    def sample(self) -> Episode:
        outer = random.getstate()
        random.setstate(self._state)
        try:
            indices, task_labels = self.tasks.sample()
        finally:
            self._state = random.getstate()
            random.setstate(outer)
        indices, task_labels = torch.as_tensor(indices), torch.as_tensor(task_labels)
        # Group by the task's remapped label 0..ways-1; within a class the first `shots` are support.
        order = torch.argsort(task_labels, stable=True)
        grouped = indices[order].view(self.ways, self.shots + self.queries)
        return Episode(classes=self.labels[grouped[:, 0]], support=grouped[:, : self.shots], query=grouped[:, self.shots :])
