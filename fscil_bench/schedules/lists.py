"""Reading FSCIL index lists in the standard (TOPIC/CEC) format: the parts every dataset shares.

A list folder holds ``session_1.txt`` .. ``session_N.txt``, one training sample a line:
``session_1`` the base session, the others the few-shot sessions, each grouped by class. How a
line names a sample is the dataset family's business (see
:meth:`fscil_bench.data.family.DatasetFamily.import_lists`); this module finds and numbers the
files, checks them against their checksums, reads their lines and turns a session's ids into a
:class:`~fscil_bench.schedules.files.SessionEntry`.

Every file read is first checked against a ``SHA256SUMS`` file (``sha256sum`` format) found in the
list folder or its parent (or given explicitly); a file that is missing from it or does not match
is an error naming the file.

The base session is stored as the rule "all training samples of the base classes" (with the list's
count and checksum) when a family's lists prove that claim; loading a rule checks it against the
data on disk again (count and checksum).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from fscil_bench.cache import sha256_file
from fscil_bench.schedules.files import SessionEntry, ids_checksum

_SESSION_FILE = re.compile(r"^session_(\d+)\.txt$")


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


def no_duplicates(path: Path, ids: list, lines: list[tuple[int, str]]) -> None:
    seen: dict = {}
    for sid, (number, _) in zip(ids, lines):
        if sid in seen:
            raise IndexListError(f"index list {path} line {number} repeats sample {sid} (first on line {seen[sid]})")
        seen[sid] = number


# --- building ----------------------------------------------------------------------------------


def per_class(counts: list[int]) -> int | list[int]:
    return counts[0] if counts and all(c == counts[0] for c in counts) else counts


def fewshot_session(path: Path, t: int, ids: list, classes: list[int], first: int,
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
    no_duplicates(path, ids, lines)
    return SessionEntry(t, first, ways, shots.pop(), len(ids), ids_checksum(ids), tuple(ids))


def base_session(path: Path, ids: list, ways: int, rule_ok: bool, lines: list[tuple[int, str]]) -> SessionEntry:
    no_duplicates(path, ids, lines)
    return SessionEntry(0, 0, ways, None, len(ids), ids_checksum(ids), None if rule_ok else tuple(ids))


def sessions_from_lists(
    lists: list[Path],
    sample_of: Callable[[Path, int, str], tuple[str, int]],
    base_is_rule: Callable[[list[str], int], bool],
) -> list[SessionEntry]:
    """The sessions of lists whose lines each name one sample: ``sample_of(path, line number,
    text)`` gives its ``(sample id, class id)`` (and raises :class:`IndexListError` for a bad line).
    The base list must cover classes ``0..ways-1``; it is stored as the "all training samples" rule
    when ``base_is_rule(ids, ways)``. Each later list covers the next classes with equal shots."""
    sessions: list[SessionEntry] = []
    first = 0
    for t, path in enumerate(lists):
        lines = read_lines(path)
        ids, classes = [], []
        for number, text in lines:
            sample, label = sample_of(path, number, text)
            ids.append(sample)
            classes.append(label)
        if t == 0:
            ways = len(set(classes))
            if sorted(set(classes)) != list(range(ways)):
                raise IndexListError(f"index list {path} (base session) should cover the first classes contiguously, "
                                     f"found class ids {sorted(set(classes))[:12]}")
            sessions.append(base_session(path, ids, ways, base_is_rule(ids, ways), lines))
        else:
            sessions.append(fewshot_session(path, t, ids, classes, first, lines))
        first += sessions[-1].ways
    return sessions


def list_order(name: str) -> tuple[int, str]:
    m = _SESSION_FILE.match(name)
    return (int(m.group(1)), name) if m else (10**9, name)
