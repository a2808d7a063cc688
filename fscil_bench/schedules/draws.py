"""Other few-shot draws and other class orders of a schedule, by seeded, documented rules.

FSCIL results depend on which few images each incremental session got and on which novel
classes came together; a benchmark's standard schedule fixes both. Two integers name a variant
of it (split 0 and order 0 are the standard schedule itself):

**Split** ``s`` (other few-shot draws). The base session keeps all its samples. For every class
``c`` of an incremental session (``c`` in the standard class ids), the standard lists' shots are
replaced by ``k_c`` samples (``k_c``: as many as the standard lists give that class) drawn
without replacement from the class's whole training pool::

    pool_c  = ascending indices of the training samples labelled c
    shots_c = sort(numpy.random.default_rng([1, s, c]).choice(pool_c, size=k_c, replace=False))

Each class is drawn from its own seeded stream, so a class gets the same shots in split ``s``
whatever the class order, and a pool of another size only changes that class's draw.

**Order** ``o`` (other class orders). The base classes stay. The novel classes, in their
standard arrival order, are shuffled by ``numpy.random.default_rng([2, o]).permutation``: the
``i``-th class of the shuffled list arrives ``i``-th, and the sessions keep their sizes (the
first ``ways_1`` shuffled classes form session 1, and so on). Global class ids stay in arrival
order, so the variant is a relabelling: the class that arrives ``i``-th among the novel ones
gets id ``B + i`` (``B`` base classes), and each class keeps its own shots.

Both apply in that order (draw on the standard ids, then reorder), so split ``s`` with order
``o`` gives every class the shots it has in split ``s`` with the standard order.
:func:`schedule_variant` builds a variant; :func:`variant_record` is what a run's record stores
of it (enough, with the benchmark, to rebuild it exactly; :func:`schedule_digest` checks that).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fscil_bench.schedules.schedule import Schedule, ScheduleError, SessionSpec

#: First word of the seed of a split's draws and of an order's permutation (keeps the streams apart).
SPLIT_STREAM, ORDER_STREAM = 1, 2


@dataclass(frozen=True)
class Variant:
    """Which variant of a benchmark's schedule a run used.

    Attributes:
        split: 0 for the standard few-shot lists, ``s > 0`` for draw ``s``.
        order: 0 for the standard class order, ``o > 0`` for permutation ``o``.
        arrival: ``arrival[i]`` is the standard id of the class that has id ``i`` in this
            variant (the identity for order 0; empty when not built from a schedule).
    """

    split: int = 0
    order: int = 0
    arrival: tuple[int, ...] = ()

    @property
    def is_standard(self) -> bool:
        return self.split == 0 and self.order == 0


def _check_index(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ScheduleError(f"{what} must be an integer >= 0, got {value!r}")
    return int(value)


def _shots_per_class(schedule: Schedule, train_labels: np.ndarray) -> dict[int, np.ndarray]:
    """Standard id -> the sorted training indices an incremental session gives that class."""
    out: dict[int, np.ndarray] = {}
    for spec in schedule.sessions[1:]:
        idx = np.asarray(spec.train_indices, dtype=np.int64)
        labels = train_labels[idx]
        for c in spec.classes:
            out[c] = np.sort(idx[labels == c])
    return out


def _uniform_shots(per_class: list[np.ndarray]) -> int | None:
    counts = {len(p) for p in per_class}
    return counts.pop() if len(counts) == 1 else None


def draw_shots(schedule: Schedule, train_labels: np.ndarray, split: int) -> Schedule:
    """``schedule`` with every incremental class's shots drawn afresh by split ``split``'s rule
    (module docstring); split 0 returns ``schedule`` itself."""
    split = _check_index(split, "split")
    if split == 0:
        return schedule
    labels = np.asarray(train_labels)
    standard = _shots_per_class(schedule, labels)
    sessions = [schedule.sessions[0]]
    for spec in schedule.sessions[1:]:
        picked = []
        for c in spec.classes:
            pool = np.flatnonzero(labels == c)
            k = len(standard[c])
            if len(pool) < k:
                raise ScheduleError(f"class {c} has {len(pool)} training samples, fewer than its {k} shots")
            rng = np.random.default_rng([SPLIT_STREAM, split, c])
            picked.append(np.sort(rng.choice(pool, size=k, replace=False)))
        sessions.append(SessionSpec(spec.index, spec.classes, np.concatenate(picked), spec.shots))
    return Schedule(f"{schedule.name} split {split}", schedule.num_classes, tuple(sessions))


def class_arrival(schedule: Schedule, order: int) -> np.ndarray:
    """``arrival[i]``: the standard id of the class with id ``i`` under order ``order``."""
    order = _check_index(order, "order")
    base, total = schedule.num_base_classes, schedule.num_classes
    arrival = np.arange(total, dtype=np.int64)
    if order:
        arrival[base:] = base + np.random.default_rng([ORDER_STREAM, order]).permutation(total - base)
    return arrival


def reorder_classes(schedule: Schedule, train_labels: np.ndarray, order: int) -> tuple[Schedule, np.ndarray]:
    """``schedule`` relabelled by order ``order`` (module docstring) and ``arrival`` (see
    :func:`class_arrival`); the new label of a sample of standard class ``c`` is
    ``argsort(arrival)[c]``. Order 0 returns ``schedule`` itself."""
    arrival = class_arrival(schedule, order)
    if order == 0:
        return schedule, arrival
    shots = _shots_per_class(schedule, np.asarray(train_labels))
    sessions = [schedule.sessions[0]]
    for spec in schedule.sessions[1:]:
        per_class = [shots[int(arrival[c])] for c in spec.classes]
        sessions.append(SessionSpec(spec.index, spec.classes, np.concatenate(per_class), _uniform_shots(per_class)))
    return Schedule(f"{schedule.name} order {order}", schedule.num_classes, tuple(sessions)), arrival


def schedule_variant(schedule: Schedule, train_labels: np.ndarray, split: int, order: int
                     ) -> tuple[Schedule, Variant]:
    """The schedule of ``(split, order)`` over the standard ``schedule`` and what names it.

    Relabel the benchmark's train and test labels with :func:`relabel` and ``variant.arrival``
    to match the returned schedule (its class ids are the variant's arrival order).
    """
    drawn = draw_shots(schedule, train_labels, split)
    reordered, arrival = reorder_classes(drawn, train_labels, order)
    return reordered, Variant(int(split), int(order), tuple(int(a) for a in arrival))


def relabel(labels: np.ndarray, arrival: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Standard class ids -> the variant's ids (``new = argsort(arrival)[old]``), as int64."""
    new_id = np.argsort(np.asarray(arrival, dtype=np.int64))
    return new_id[np.asarray(labels, dtype=np.int64)]


def schedule_digest(schedule: Schedule) -> str:
    """sha256 of every session's classes and training indices (in the schedule's order)."""
    digest = hashlib.sha256()
    for spec in schedule.sessions:
        digest.update(np.asarray(spec.classes, dtype=np.int64).tobytes())
        digest.update(b"|")
        digest.update(np.asarray(spec.train_indices, dtype=np.int64).tobytes())
        digest.update(b";")
    return digest.hexdigest()


def variant_record(schedule: Schedule, variant: Variant) -> dict:
    """What a run's record stores of its schedule: split, order, the digest of the whole
    schedule and, for a variant other than the standard one, the class order and each
    incremental session's training indices (the base session never changes)."""
    record: dict = {"split": variant.split, "order": variant.order, "sha256": schedule_digest(schedule)}
    if not variant.is_standard:
        record["class_order"] = list(variant.arrival)
        record["session_train_indices"] = [np.asarray(s.train_indices).tolist() for s in schedule.sessions[1:]]
    return record
