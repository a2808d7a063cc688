"""Build schedule files from FSCIL index lists in the standard (TOPIC/CEC) format.

A list folder holds ``session_1.txt`` .. ``session_N.txt``, one training sample a line:
``session_1`` the base session, the others the few-shot sessions, each grouped by class. How a
line names a sample depends on the dataset (``--format``):

- ``cifar100``: an integer, the index into the official ``cifar-100-python/train`` pickle;
- ``mini_imagenet``: a path ``.../<wnid>/<file>.jpg`` (only the file name is the sample id), with
  ``train.csv`` (``filename,label``) beside the lists fixing every image's class and the class order
  (first appearance), and optionally ``test.csv`` for the test counts;
- ``cub200``: a path ``.../images/<NNN.Name>/<file>.jpg``; the sample id is ``<NNN.Name>/<file>.jpg``
  and the class id is ``NNN - 1``.

Every file read is first checked against a ``SHA256SUMS`` file (``sha256sum`` format) found in the
list folder or its parent (or given explicitly); a file that is missing from it or does not match
is an error naming the file.

The base session is stored as the rule "all training samples of the base classes" (with the list's
count and checksum) when the lists prove that claim: for miniImageNet, ``train.csv`` says which
images the base classes have; for CIFAR-100 (which has exactly ``train_per_class`` training images
per class), a base list of that many distinct indices per base class. Loading a rule checks it
against the data on disk again (count and checksum). CUB-200's lists cannot prove it (its train
split lives in the dataset, not in the lists), so its base session is listed sample by sample.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data.cache import sha256_file
from .schedule_files import RULE_ALL, ScheduleFile, SessionEntry, ids_checksum, parse_schedule

FORMATS = ("cifar100", "mini_imagenet", "cub200")

SAMPLE_IDS = {
    "cifar100": "index into the training array of the official cifar-100-python/train pickle, in file order",
    "mini_imagenet": "image file name in miniimagenet/images/ (as listed in split/train.csv)",
    "cub200": "image path relative to CUB_200_2011/images/, '<NNN.Name>/<file>.jpg' (as in images.txt)",
}

#: Facts about the full CUB-200-2011 data set (official split), checked by ``data verify``.
CUB_FULL = {"num_images": 11788, "train_total": 5994, "test_total": 5794}

_SESSION_FILE = re.compile(r"^session_(\d+)\.txt$")
_CUB_FOLDER = re.compile(r"^(\d{3})\.(.+)$")


class IndexListError(ValueError):
    """Index lists that cannot be read, fail their checksums or break the protocol's structure."""


# --- checksums ---------------------------------------------------------------------------------


def find_sums(lists_dir: Path) -> Path | None:
    """``SHA256SUMS`` in ``lists_dir`` or its parent, if any."""
    for folder in (lists_dir, lists_dir.parent):
        if (folder / "SHA256SUMS").is_file():
            return folder / "SHA256SUMS"
    return None


def read_sums(sums: Path) -> dict[Path, str]:
    """``{absolute path: sha256}`` from a ``sha256sum``-format file (paths relative to its folder)."""
    out: dict[Path, str] = {}
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexListError(f"cannot read checksum file {sums}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            raise IndexListError(f"checksum file {sums} line {number}: expected '<sha256>  <path>', found {line!r}")
        rel = parts[1].strip().lstrip("*")
        out[(sums.parent / rel).resolve()] = parts[0].lower()
    return out


def verify_checksums(files: list[Path], sums: Path) -> dict[str, str]:
    """Check every file against ``sums``; return ``{file name: sha256}``."""
    table = read_sums(sums)
    out = {}
    for path in files:
        expected = table.get(path.resolve())
        if expected is None:
            raise IndexListError(f"index list {path} is not listed in {sums}; every list must be checksummed")
        actual = sha256_file(path)
        if actual != expected:
            raise IndexListError(f"index list {path} does not match its checksum in {sums} (expected {expected[:12]}..., "
                                 f"found {actual[:12]}...): the list was altered or is not the standard one")
        out[path.name] = actual
    return out


# --- reading lists -----------------------------------------------------------------------------


def session_files(lists_dir: Path) -> list[Path]:
    """``session_1.txt`` .. ``session_N.txt``, which must be numbered without gaps."""
    if not lists_dir.is_dir():
        raise IndexListError(f"index list folder {lists_dir} does not exist")
    found = {}
    for p in lists_dir.iterdir():
        m = _SESSION_FILE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise IndexListError(f"no session_N.txt files in {lists_dir}; expected session_1.txt (base) .. session_N.txt")
    expected = list(range(1, max(found) + 1))
    if sorted(found) != expected:
        gaps = sorted(set(expected) - set(found))
        raise IndexListError(f"index lists in {lists_dir} skip session_{gaps[0]}.txt; expected session_1 .. session_{max(found)}")
    if len(found) < 2:
        raise IndexListError(f"{lists_dir} holds only session_1.txt; a schedule needs at least one few-shot session")
    return [found[i] for i in expected]


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines as ``(line number, text)``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexListError(f"cannot read index list {path}: {exc}") from exc
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise IndexListError(f"index list {path} is empty")
    return lines


def _no_duplicates(path: Path, ids: list, lines: list[tuple[int, str]]) -> None:
    seen: dict = {}
    for sid, (number, _) in zip(ids, lines):
        if sid in seen:
            raise IndexListError(f"index list {path} line {number} repeats sample {sid} (first on line {seen[sid]})")
        seen[sid] = number


def read_mini_csv(path: Path) -> list[tuple[str, str, int]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IndexListError(f"cannot read {path}: {exc}") from exc
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise IndexListError(f"{path} should start with the header 'filename,label'")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise IndexListError(f"{path} line {number}: expected 'filename,label', found {','.join(row)!r}")
        out.append((row[0].strip(), row[1].strip(), number))
    return out


# --- building ----------------------------------------------------------------------------------


def _per_class(counts: list[int]) -> int | list[int]:
    return counts[0] if counts and all(c == counts[0] for c in counts) else counts


def _fewshot_session(path: Path, t: int, ids: list, classes: list[int], first: int,
                     lines: list[tuple[int, str]]) -> SessionEntry:
    """A few-shot session whose samples have class ids ``classes``; must cover the next classes
    contiguously from ``first`` with the same number of shots each."""
    counts = Counter(classes)
    ways = len(counts)
    if sorted(counts) != list(range(first, first + ways)):
        raise IndexListError(f"index list {path} covers classes {sorted(counts)[:12]}, expected the next classes "
                             f"from {first} on, contiguous")
    shots = set(counts.values())
    if len(shots) != 1:
        raise IndexListError(f"index list {path} holds unequal shots per class: "
                             + ", ".join(f"class {c}: {n}" for c, n in sorted(counts.items())))
    _no_duplicates(path, ids, lines)
    return SessionEntry(t, first, ways, shots.pop(), len(ids), ids_checksum(ids), tuple(ids))


def _base_session(path: Path, ids: list, ways: int, rule_ok: bool, lines: list[tuple[int, str]]) -> SessionEntry:
    _no_duplicates(path, ids, lines)
    return SessionEntry(0, 0, ways, None, len(ids), ids_checksum(ids), None if rule_ok else tuple(ids))


def _build_cifar(lists: list[Path], num_classes: int, base_classes: int, train_per_class: int,
                 test_per_class: int) -> tuple[list[SessionEntry], dict, None]:
    pool = num_classes * train_per_class
    parsed = []
    for path in lists:
        lines = read_lines(path)
        ids = []
        for number, text in lines:
            if not text.isdigit():
                raise IndexListError(f"index list {path} line {number}: expected an integer index into the CIFAR-100 "
                                     f"train pickle, found {text!r}")
            value = int(text)
            if value >= pool:
                raise IndexListError(f"index list {path} line {number}: index {value} is past the {pool} training images")
            ids.append(value)
        parsed.append((path, ids, lines))
    if not 0 < base_classes < num_classes or (num_classes - base_classes) % (len(lists) - 1):
        raise IndexListError(f"{num_classes - base_classes} incremental classes do not split into {len(lists) - 1} "
                             f"sessions (num_classes {num_classes}, base_classes {base_classes})")
    ways = (num_classes - base_classes) // (len(lists) - 1)
    path, ids, lines = parsed[0]
    full = base_classes * train_per_class
    if len(ids) > full:
        raise IndexListError(f"index list {path} holds {len(ids)} samples, more than the {full} training images of "
                             f"{base_classes} base classes")
    sessions = [_base_session(path, ids, base_classes, len(ids) == full, lines)]
    first = base_classes
    for t, (path, ids, lines) in enumerate(parsed[1:], start=1):
        if len(ids) % ways:
            raise IndexListError(f"index list {path} holds {len(ids)} samples, not a multiple of {ways} ways")
        _no_duplicates(path, ids, lines)
        sessions.append(SessionEntry(t, first, ways, len(ids) // ways, len(ids), ids_checksum(ids), tuple(ids)))
        first += ways
    expected = {"train_per_class": train_per_class, "test_per_class": test_per_class}
    return sessions, expected, None


def _build_mini(lists: list[Path], lists_dir: Path) -> tuple[list[SessionEntry], dict, list[str]]:
    train_csv = lists_dir / "train.csv"
    if not train_csv.is_file():
        raise IndexListError(f"mini_imagenet lists need train.csv (filename,label) beside the session lists in "
                             f"{lists_dir}: it fixes each image's class and the class order")
    rows = read_mini_csv(train_csv)
    order = list(dict.fromkeys(wnid for _, wnid, _ in rows))
    position = {w: i for i, w in enumerate(order)}
    class_of = {}
    for fname, wnid, number in rows:
        if fname in class_of:
            raise IndexListError(f"{train_csv} line {number} lists {fname} a second time")
        class_of[fname] = position[wnid]
    train_counts = Counter(class_of.values())
    sessions: list[SessionEntry] = []
    first = 0
    for t, path in enumerate(lists):
        lines = read_lines(path)
        ids, classes = [], []
        for number, text in lines:
            parts = text.replace("\\", "/").split("/")
            name = parts[-1]
            if name not in class_of:
                raise IndexListError(f"index list {path} line {number}: image {name} is not in {train_csv}")
            c = class_of[name]
            if len(parts) >= 2 and parts[-2] != order[c]:
                raise IndexListError(f"index list {path} line {number}: {text} sits under class folder {parts[-2]}, "
                                     f"but {train_csv} gives it class {order[c]}")
            ids.append(name)
            classes.append(c)
        if t == 0:
            ways = len(set(classes))
            if sorted(set(classes)) != list(range(ways)):
                raise IndexListError(f"index list {path} (base session) should cover the first classes of {train_csv} "
                                     f"contiguously, found class ids {sorted(set(classes))[:12]}")
            everything = {n for n, c in class_of.items() if c < ways}
            sessions.append(_base_session(path, ids, ways, set(ids) == everything, lines))
        else:
            sessions.append(_fewshot_session(path, t, ids, classes, first, lines))
        first += sessions[-1].ways
    num_classes = first
    if num_classes != len(order):
        raise IndexListError(f"the lists in {lists_dir} cover {num_classes} classes, but {train_csv} has {len(order)}; "
                             f"a schedule covers every class of its data set")
    expected: dict[str, Any] = {"train_per_class": _per_class([train_counts[c] for c in range(num_classes)])}
    test_csv = lists_dir / "test.csv"
    if test_csv.is_file():
        test_rows = read_mini_csv(test_csv)
        unknown = [(wnid, n) for _, wnid, n in test_rows if wnid not in position]
        if unknown:
            raise IndexListError(f"{test_csv} line {unknown[0][1]} names class {unknown[0][0]}, which {train_csv} lacks")
        test_counts = Counter(position[wnid] for _, wnid, _ in test_rows)
        expected["test_per_class"] = _per_class([test_counts[c] for c in range(num_classes)])
    return sessions, expected, order[:num_classes]


def _build_cub(lists: list[Path]) -> tuple[list[SessionEntry], dict, list[str]]:
    names: dict[int, str] = {}
    sessions: list[SessionEntry] = []
    first = 0
    for t, path in enumerate(lists):
        lines = read_lines(path)
        ids, classes = [], []
        for number, text in lines:
            parts = text.replace("\\", "/").split("/")
            m = _CUB_FOLDER.match(parts[-2]) if len(parts) >= 2 else None
            if m is None:
                raise IndexListError(f"index list {path} line {number}: expected a path ending in "
                                     f"'<NNN.Name>/<file>.jpg', found {text!r}")
            c = int(m.group(1)) - 1
            if names.setdefault(c, parts[-2]) != parts[-2]:
                raise IndexListError(f"index list {path} line {number}: class {c + 1:03d} is named {parts[-2]}, "
                                     f"elsewhere {names[c]}")
            ids.append(f"{parts[-2]}/{parts[-1]}")
            classes.append(c)
        if t == 0:
            ways = len(set(classes))
            if sorted(set(classes)) != list(range(ways)):
                raise IndexListError(f"index list {path} (base session) should cover classes 001..{ways:03d} "
                                     f"contiguously, found folders {sorted(set(classes))[:12]}")
            sessions.append(_base_session(path, ids, ways, False, lines))
        else:
            sessions.append(_fewshot_session(path, t, ids, classes, first, lines))
        first += sessions[-1].ways
    expected = dict(CUB_FULL) if first == 200 else {}
    return sessions, expected, [names[c] for c in range(first)]


def build_schedule(
    lists_dir: Path,
    fmt: str,
    *,
    name: str | None = None,
    sums: Path | None = None,
    check_sums: bool = True,
    num_classes: int = 100,
    base_classes: int = 60,
    train_per_class: int = 500,
    test_per_class: int = 100,
    log: Callable[[str], None] = print,
) -> ScheduleFile:
    """Read the lists in ``lists_dir`` (format ``fmt``) and return the schedule they define.

    ``num_classes``, ``base_classes``, ``train_per_class`` and ``test_per_class`` describe the
    data set for the ``cifar100`` format only (its lists name samples by index alone; the
    defaults are CIFAR-100's); the other formats read classes from the lists themselves.
    """
    if fmt not in FORMATS:
        raise IndexListError(f"unknown list format {fmt!r}; choose from {', '.join(FORMATS)}")
    lists_dir = Path(lists_dir)
    lists = session_files(lists_dir)
    read = list(lists)
    if fmt == "mini_imagenet":
        read += [lists_dir / n for n in ("train.csv", "test.csv") if (lists_dir / n).is_file()]
    if check_sums:
        sums = Path(sums) if sums is not None else find_sums(lists_dir)
        if sums is None:
            raise IndexListError(f"no SHA256SUMS in {lists_dir} or its parent; pass --sums FILE "
                                 f"(or --no-checksums for lists of your own)")
        digests = verify_checksums(read, sums)
    else:
        log(f"warning: not checking the lists in {lists_dir} against any checksums")
        digests = {p.name: sha256_file(p) for p in read}
    if fmt == "cifar100":
        sessions, expected, class_names = _build_cifar(lists, num_classes, base_classes, train_per_class, test_per_class)
    elif fmt == "mini_imagenet":
        sessions, expected, class_names = _build_mini(lists, lists_dir)
    else:
        sessions, expected, class_names = _build_cub(lists)
    schedule = ScheduleFile(
        name=name or fmt,
        dataset=fmt,
        num_classes=sum(s.ways for s in sessions),
        sessions=tuple(sessions),
        class_names=class_names,
        sample_ids=SAMPLE_IDS[fmt],
        expected=expected,
        source={
            "format": fmt,
            "lists": {k: digests[k] for k in sorted(digests, key=_list_order)},
            "built_by": "scripts/build_schedules.py",
            "base_session": (f"the rule '{RULE_ALL}', proven by the lists" if sessions[0].ids is None
                             else "listed sample by sample"),
        },
    )
    # round-trip through the parser: the same checks a reader applies
    return parse_schedule(schedule.to_dict(), str(lists_dir))


def _list_order(name: str) -> tuple[int, str]:
    m = _SESSION_FILE.match(name)
    return (int(m.group(1)), name) if m else (10**9, name)
