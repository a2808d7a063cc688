"""Session schedules: which classes arrive when, and which training samples each session may use.

A schedule is data. Global class ids are assigned in arrival order, so session ``t`` always
introduces the contiguous id range ``[num_seen(t-1), num_seen(t))``; loaders map their
dataset's own labels onto this order. The test set after session ``t`` is every test sample
whose class id is below ``num_seen(t)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ScheduleError(ValueError):
    """A schedule that breaks the FSCIL invariants."""


@dataclass(frozen=True)
class SessionSpec:
    """One session of a schedule.

    Attributes:
        index: 0 for the base session, then 1, 2, ...
        classes: the global class ids introduced by this session (contiguous, ascending).
        train_indices: indices into the benchmark's training pool of the samples this
            session may use (all of them for the base session, the few shots afterwards).
        shots: samples per class in an incremental session; ``None`` for the base session.
    """

    index: int
    classes: tuple[int, ...]
    train_indices: np.ndarray = field(repr=False)
    shots: int | None = None

    @property
    def ways(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Schedule:
    """An ordered list of sessions over ``num_classes`` classes."""

    name: str
    num_classes: int
    sessions: tuple[SessionSpec, ...]

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def num_base_classes(self) -> int:
        return self.sessions[0].ways

    def num_seen(self, t: int) -> int:
        """Number of classes seen once session ``t`` is done."""
        return sum(s.ways for s in self.sessions[: t + 1])

    def class_groups(self) -> list[tuple[int, int]]:
        """``[start, stop)`` class-id range introduced by each session."""
        groups, start = [], 0
        for s in self.sessions:
            groups.append((start, start + s.ways))
            start += s.ways
        return groups

    def validate(self) -> None:
        if not self.sessions:
            raise ScheduleError(f"schedule {self.name!r} has no sessions")
        expected = 0
        for t, s in enumerate(self.sessions):
            if s.index != t:
                raise ScheduleError(f"schedule {self.name!r}: session at position {t} has index {s.index}")
            if s.classes != tuple(range(expected, expected + s.ways)) or s.ways == 0:
                raise ScheduleError(
                    f"schedule {self.name!r}: session {t} must introduce classes "
                    f"{expected}..{expected + max(s.ways, 1) - 1} in order, got {list(s.classes)[:10]}"
                )
            expected += s.ways
        if expected != self.num_classes:
            raise ScheduleError(
                f"schedule {self.name!r}: sessions cover {expected} classes, expected {self.num_classes}"
            )
        seen: set[int] = set()
        for s in self.sessions:
            ids = set(np.asarray(s.train_indices).tolist())
            if seen & ids:
                raise ScheduleError(f"schedule {self.name!r}: session {s.index} reuses training samples")
            seen |= ids

    def check_labels(self, train_labels: np.ndarray) -> None:
        """Raise unless every scheduled sample carries a class of its own session (and shots match)."""
        for s in self.sessions:
            labels = np.asarray(train_labels)[s.train_indices]
            bad = ~np.isin(labels, s.classes)
            if bad.any():
                raise ScheduleError(
                    f"schedule {self.name!r}: session {s.index} lists {int(bad.sum())} samples "
                    f"of classes outside {s.classes[0]}..{s.classes[-1]}"
                )
            if s.shots is not None:
                counts = np.bincount(labels - s.classes[0], minlength=s.ways)
                if (counts != s.shots).any():
                    raise ScheduleError(
                        f"schedule {self.name!r}: session {s.index} should hold {s.shots} shots "
                        f"per class, found {counts.tolist()}"
                    )

    @classmethod
    def from_class_counts(
        cls,
        name: str,
        train_labels: np.ndarray,
        base_classes: int,
        ways: int,
        shots: int,
        rng: np.random.Generator,
    ) -> Schedule:
        """Build a schedule: all samples of the base classes, then ``shots`` random samples
        of each class in groups of ``ways``, picked with ``rng``."""
        labels = np.asarray(train_labels)
        num_classes = int(labels.max()) + 1
        if (num_classes - base_classes) % ways:
            raise ScheduleError(
                f"{num_classes - base_classes} incremental classes do not split into {ways}-way sessions"
            )
        sessions = [SessionSpec(0, tuple(range(base_classes)), np.flatnonzero(labels < base_classes))]
        for t, start in enumerate(range(base_classes, num_classes, ways), start=1):
            picked = []
            for c in range(start, start + ways):
                pool = np.flatnonzero(labels == c)
                if len(pool) < shots:
                    raise ScheduleError(f"class {c} has {len(pool)} training samples, fewer than {shots} shots")
                picked.append(np.sort(rng.choice(pool, size=shots, replace=False)))
            sessions.append(SessionSpec(t, tuple(range(start, start + ways)), np.concatenate(picked), shots))
        return cls(name, num_classes, tuple(sessions))
