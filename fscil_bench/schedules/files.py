"""Schedule files: a benchmark's sessions as data (``sessions/<name>.json`` or ``.json.gz``).

A schedule file names every session's classes, ways and shots and the exact training samples
each session may use, by *sample id* - a stable identifier of a training image in its dataset
(CIFAR-100: the index into the official ``train`` pickle; miniImageNet: the image file name;
CUB-200: the path under ``images/``, e.g. ``001.Black_footed_Albatross/Black_Footed_Albatross_0041_796108.jpg``).
:meth:`ScheduleFile.to_schedule` maps those ids onto positions in a loaded training pool and returns a
:class:`~fscil_bench.schedule.Schedule`.

Format (JSON, optionally gzip-compressed)::

    {
      "format": "fscil-bench-schedule", "format_version": 1,
      "name": "cifar100", "dataset": "cifar100",
      "sample_ids": "<what a sample id is, in words>",
      "num_classes": 100,
      "class_names": null | ["<the dataset's name of global class 0>", ...],
      "sessions": [
        {"index": 0, "first_class": 0, "ways": 60, "shots": null,
         "samples": {"all_training_samples": true, "count": 30000, "sha256": "..."}},
        {"index": 1, "first_class": 60, "ways": 5, "shots": 5,
         "samples": {"ids": [29774, 33344, ...], "count": 25, "sha256": "..."}},
        ...
      ],
      "expected": {"train_per_class": 500, "test_per_class": 100, ...},
      "source": {"format": "cifar100", "lists": {"session_1.txt": "<sha256>", ...}, ...}
    }

A session's samples are either listed (``ids``) or stated as a rule, ``all_training_samples``:
every training sample of the session's classes, which is how the base session of the standard
protocols is defined. A rule is stored with the ``count`` and ``sha256`` of the list it stood for
when the file was built; loading checks the pool against both, so a rule can never silently pick
other samples. ``sha256`` is the digest of the session's sample ids, sorted (numerically for
integer ids), written one per line with ``\\n`` after each.

Global class ids are assigned in arrival order, as :mod:`fscil_bench.schedule` requires;
``class_names[g]`` is the dataset's own name of global class ``g`` (``null`` when the dataset's
label ids are the global ids, as for CIFAR-100). ``expected`` holds facts about the dataset the
schedule was built for (images per class or in all), checked by ``fscil-bench data verify``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fscil_bench.schedules.schedule import Schedule, ScheduleError, SessionSpec

FORMAT = "fscil-bench-schedule"
FORMAT_VERSION = 1
RULE_ALL = "all_training_samples"


class ScheduleFileError(ValueError):
    """A schedule file that cannot be read, or that does not fit the training pool."""


def ids_checksum(ids: Sequence) -> str:
    """sha256 of the ids sorted (numerically for ints), one per line, ``\\n``-terminated."""
    values = list(ids)
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        text = "".join(f"{int(v)}\n" for v in sorted(int(v) for v in values))
    else:
        text = "".join(f"{v}\n" for v in sorted(str(v) for v in values))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SessionEntry:
    """One session of a schedule file."""

    index: int
    first_class: int
    ways: int
    shots: int | None
    count: int
    sha256: str
    ids: tuple | None = None  # the listed sample ids, or None for the all-training-samples rule

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(range(self.first_class, self.first_class + self.ways))

    def describe(self) -> str:
        last = self.first_class + self.ways - 1
        if self.ids is None:
            return f"all {self.count} training samples of classes {self.first_class}-{last}"
        return f"{self.count} listed samples of classes {self.first_class}-{last}"

    def to_dict(self) -> dict[str, Any]:
        samples: dict[str, Any] = {RULE_ALL: True} if self.ids is None else {"ids": list(self.ids)}
        samples.update(count=self.count, sha256=self.sha256)
        return {"index": self.index, "first_class": self.first_class, "ways": self.ways, "shots": self.shots,
                "samples": samples}


@dataclass(frozen=True)
class ScheduleFile:
    """A parsed schedule file (see the module docstring)."""

    name: str
    dataset: str
    num_classes: int
    sessions: tuple[SessionEntry, ...]
    class_names: list[str] | None = None
    sample_ids: str = ""
    expected: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    sha256: str = ""

    def num_seen(self, t: int) -> int:
        return sum(s.ways for s in self.sessions[: t + 1])

    def per_class(self, key: str) -> list[int] | None:
        """``expected[key]`` (an int for every class, or a list) as a per-class list, if known."""
        value = self.expected.get(key)
        if value is None:
            return None
        return [int(value)] * self.num_classes if isinstance(value, int) else [int(v) for v in value]

    def test_counts(self) -> list[int] | None:
        """Test images after each session (from ``expected.test_per_class``), if the file says."""
        per_class = self.per_class("test_per_class")
        if per_class is None:
            return None
        return [sum(per_class[: self.num_seen(t)]) for t in range(len(self.sessions))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "dataset": self.dataset,
            "sample_ids": self.sample_ids,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "sessions": [s.to_dict() for s in self.sessions],
            "expected": self.expected,
            "source": self.source,
        }

    def to_schedule(self, train_ids: Sequence, train_labels: np.ndarray, name: str | None = None) -> Schedule:
        """Map the sample ids onto positions in the training pool (``train_ids[i]`` is the id of
        pool sample ``i``, ``train_labels[i]`` its global class id) and build the schedule.
        Raises :class:`ScheduleFileError` naming this file when the pool does not fit."""
        where = self.path or self.name
        labels = np.asarray(train_labels, dtype=np.int64)
        if len(labels) != len(train_ids):
            raise ValueError(f"{len(train_ids)} sample ids but {len(labels)} labels")
        position: dict | None = None
        specs = []
        for s in self.sessions:
            last = s.first_class + s.ways - 1
            if s.ids is None:
                idx = np.flatnonzero((labels >= s.first_class) & (labels <= last))
                if len(idx) != s.count or ids_checksum([train_ids[i] for i in idx]) != s.sha256:
                    detail = (f"{len(idx)}" if len(idx) != s.count else f"{len(idx)} (but other ones: the checksum differs)")
                    raise ScheduleFileError(
                        f"schedule {where}: session {s.index} holds all {s.count} training samples of classes "
                        f"{s.first_class}-{last} of the dataset it was built for, but the training data on disk has "
                        f"{detail}; the dataset differs from that one")
            else:
                if position is None:
                    position = {sid: i for i, sid in enumerate(train_ids)}
                missing = [sid for sid in s.ids if sid not in position]
                if missing:
                    shown = ", ".join(map(str, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                    raise ScheduleFileError(
                        f"schedule {where}: session {s.index} uses {len(missing)} training samples that are not in the "
                        f"training data on disk: {shown}")
                idx = np.array([position[sid] for sid in s.ids], dtype=np.int64)
            specs.append(SessionSpec(s.index, s.classes, idx, s.shots))
        try:
            schedule = Schedule(name or self.name, self.num_classes, tuple(specs))
            schedule.check_labels(labels)
        except ScheduleError as exc:
            raise ScheduleFileError(f"schedule {where} does not fit the training data on disk: {exc}") from exc
        return schedule


def shipped_schedules() -> list[str]:
    """Names of the schedule files shipped in the ``fscil_bench.sessions`` package."""
    folder = resources.files("fscil_bench.sessions")
    names = []
    for entry in folder.iterdir():
        for suffix in (".json.gz", ".json"):
            if entry.name.endswith(suffix):
                names.append(entry.name[: -len(suffix)])
                break
    return sorted(names)


def _read_bytes(path_or_name: str | Path) -> tuple[bytes, str]:
    text = str(path_or_name)
    looks_like_path = isinstance(path_or_name, Path) or "/" in text or "\\" in text or text.endswith((".json", ".gz"))
    if looks_like_path:
        path = Path(path_or_name)
        try:
            return path.read_bytes(), str(path)
        except OSError as exc:
            raise ScheduleFileError(f"cannot read schedule file {path}: {exc.strerror or exc}") from exc
    folder = resources.files("fscil_bench.sessions")
    for suffix in (".json", ".json.gz"):
        entry = folder / f"{text}{suffix}"
        if entry.is_file():
            return entry.read_bytes(), f"sessions/{text}{suffix}"
    raise ScheduleFileError(f"no shipped schedule named {text!r} (shipped: {', '.join(shipped_schedules()) or 'none'}); "
                            f"pass a path to a .json or .json.gz file")


def _int(value: Any, what: str, where: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ScheduleFileError(f"schedule file {where}: {what} should be an integer >= {minimum}, found {value!r}")
    return value


def parse_schedule(doc: Any, where: str, digest: str = "") -> ScheduleFile:
    """Validate a decoded schedule document."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ScheduleFileError(f"schedule file {where} is not an fscil-bench schedule (no \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ScheduleFileError(f"schedule file {where} has format_version {doc.get('format_version')!r}; this release "
                                f"reads version {FORMAT_VERSION}")
    num_classes = _int(doc.get("num_classes"), "num_classes", where, 1)
    raw_sessions = doc.get("sessions")
    if not isinstance(raw_sessions, list) or not raw_sessions:
        raise ScheduleFileError(f"schedule file {where}: \"sessions\" should be a non-empty list")
    sessions, start = [], 0
    for t, raw in enumerate(raw_sessions):
        if not isinstance(raw, dict) or not isinstance(raw.get("samples"), dict):
            raise ScheduleFileError(f"schedule file {where}: session {t} should be an object with \"samples\"")
        if raw.get("index") != t or raw.get("first_class") != start:
            raise ScheduleFileError(f"schedule file {where}: session {t} should have index {t} and first_class {start}, "
                                    f"found {raw.get('index')!r} and {raw.get('first_class')!r}")
        ways = _int(raw.get("ways"), f"session {t} ways", where, 1)
        shots = raw.get("shots")
        if shots is not None:
            shots = _int(shots, f"session {t} shots", where, 1)
        samples = raw["samples"]
        count = _int(samples.get("count"), f"session {t} count", where)
        digest_ids = samples.get("sha256")
        if not isinstance(digest_ids, str) or len(digest_ids) != 64:
            raise ScheduleFileError(f"schedule file {where}: session {t} lacks the sha256 of its samples")
        ids = None
        if samples.get(RULE_ALL) is True:
            if "ids" in samples:
                raise ScheduleFileError(f"schedule file {where}: session {t} has both a rule and listed ids")
        else:
            ids = samples.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in ids):
                raise ScheduleFileError(f"schedule file {where}: session {t} should list its sample ids "
                                        f"or say \"{RULE_ALL}\": true")
            if len(ids) != count or len(set(ids)) != count:
                raise ScheduleFileError(f"schedule file {where}: session {t} lists {len(ids)} ids "
                                        f"({len(set(ids))} distinct), but its count is {count}")
            if ids_checksum(ids) != digest_ids:
                raise ScheduleFileError(f"schedule file {where}: session {t}'s ids do not match its sha256 "
                                        f"(the file was edited by hand?)")
            ids = tuple(ids)
        if shots is not None and count != ways * shots:
            raise ScheduleFileError(f"schedule file {where}: session {t} is {ways}-way {shots}-shot but holds {count} samples")
        sessions.append(SessionEntry(t, start, ways, shots, count, digest_ids, ids))
        start += ways
    if start != num_classes:
        raise ScheduleFileError(f"schedule file {where}: sessions cover {start} classes, num_classes is {num_classes}")
    names = doc.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != num_classes):
        raise ScheduleFileError(f"schedule file {where}: class_names should list {num_classes} names")
    return ScheduleFile(
        name=str(doc.get("name") or Path(where).name.split(".")[0]),
        dataset=str(doc.get("dataset") or ""),
        num_classes=num_classes,
        sessions=tuple(sessions),
        class_names=[str(n) for n in names] if names is not None else None,
        sample_ids=str(doc.get("sample_ids") or ""),
        expected=dict(doc.get("expected") or {}),
        source=dict(doc.get("source") or {}),
        path=where,
        sha256=digest,
    )


def read_schedule_file(path_or_name: str | Path) -> ScheduleFile:
    """Read a schedule file: a path (``.json`` / ``.json.gz``) or the name of a shipped one
    (``"cifar100"`` -> ``sessions/cifar100.json``)."""
    data, where = _read_bytes(path_or_name)
    digest = hashlib.sha256(data).hexdigest()
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        doc = json.loads(data.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScheduleFileError(f"schedule file {where} is not valid JSON (or gzip-compressed JSON): {exc}") from exc
    return parse_schedule(doc, where, digest)


def dump_schedule(doc: dict[str, Any]) -> bytes:
    """Deterministic bytes of a schedule document: one session per line, the rest indented."""
    lines = ["{"]
    items = list(doc.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key == "sessions":
            lines.append('  "sessions": [')
            for j, session in enumerate(value):
                lines.append("    " + json.dumps(session, separators=(", ", ": ")) + ("," if j < len(value) - 1 else ""))
            lines.append("  ]" + comma)
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, separators=(', ', ': '))}{comma}")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode()


def write_schedule_file(schedule: ScheduleFile | dict[str, Any], out: Path) -> Path:
    """Write a schedule file (gzip-compressed, reproducibly, when ``out`` ends in ``.gz``)."""
    from fscil_bench.cache import atomic_write_bytes

    doc = schedule.to_dict() if isinstance(schedule, ScheduleFile) else schedule
    parse_schedule(doc, str(out))  # never write a file that would not read back
    data = dump_schedule(doc)
    out = Path(out)
    if out.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    atomic_write_bytes(out, data)
    out.chmod(0o644)  # a data file, readable like the rest of the package
    return out
