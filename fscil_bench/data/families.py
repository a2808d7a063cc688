"""The dataset families this release reads, and schedules built from their standard index lists.

:data:`FAMILIES` maps a family's name to its :class:`~fscil_bench.data.family.DatasetFamily`
(imported on first use). :func:`build_schedule` turns a folder of standard index lists
(``session_1.txt`` .. ``session_N.txt``, checked against ``SHA256SUMS``) into a schedule file,
with the family reading the lines in its own format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fscil_bench.cache import sha256_file
from fscil_bench.data.family import DatasetFamily, ListFacts
from fscil_bench.registry import Registry
from fscil_bench.schedules.files import RULE_ALL, ScheduleFile, parse_schedule
from fscil_bench.schedules.lists import (
    IndexListError,
    find_sums,
    list_order,
    session_files,
    verify_checksums,
)

FAMILIES: Registry[DatasetFamily] = Registry("dataset family")
FAMILIES.add("cifar100", "fscil_bench.data.cifar100:FAMILY")
FAMILIES.add("mini_imagenet", "fscil_bench.data.mini_imagenet:FAMILY")
FAMILIES.add("cub200", "fscil_bench.data.cub200:FAMILY")


def get_family(name: str) -> DatasetFamily:
    return FAMILIES.get(name)


def build_schedule(
    lists_dir: Path,
    family: str,
    *,
    name: str | None = None,
    sums: Path | None = None,
    check_sums: bool = True,
    num_classes: int = ListFacts.num_classes,
    base_classes: int = ListFacts.base_classes,
    train_per_class: int = ListFacts.train_per_class,
    test_per_class: int = ListFacts.test_per_class,
    log: Callable[[str], None] = print,
) -> ScheduleFile:
    """Read the lists in ``lists_dir`` (written in ``family``'s format) and return the schedule
    they define. ``num_classes``, ``base_classes``, ``train_per_class`` and ``test_per_class``
    describe the dataset for formats whose lines are bare indices (CIFAR-100's; the defaults are
    CIFAR-100's); the other families read classes from the lists themselves."""
    if family not in FAMILIES:
        raise IndexListError(f"unknown list format {family!r}; choose from {', '.join(FAMILIES.names())}")
    reader = FAMILIES.get(family)
    lists_dir = Path(lists_dir)
    lists = session_files(lists_dir)
    read = list(lists) + reader.list_extras(lists_dir)
    if check_sums:
        sums = Path(sums) if sums is not None else find_sums(lists_dir)
        if sums is None:
            raise IndexListError(f"no SHA256SUMS in {lists_dir} or its parent; pass --sums FILE "
                                 f"(or --no-checksums for lists of your own)")
        digests = verify_checksums(read, sums)
    else:
        log(f"warning: not checking the lists in {lists_dir} against any checksums")
        digests = {p.name: sha256_file(p) for p in read}
    facts = ListFacts(num_classes, base_classes, train_per_class, test_per_class)
    imported = reader.import_lists(lists, lists_dir, facts)
    sessions = imported.sessions
    schedule = ScheduleFile(
        name=name or family,
        dataset=family,
        num_classes=sum(s.ways for s in sessions),
        sessions=tuple(sessions),
        class_names=imported.class_names,
        sample_ids=reader.sample_ids,
        expected=imported.expected,
        source={
            "format": family,
            "lists": {k: digests[k] for k in sorted(digests, key=list_order)},
            "built_by": "scripts/build_schedules.py",
            "base_session": (f"the rule '{RULE_ALL}', proven by the lists" if sessions[0].ids is None
                             else "listed sample by sample"),
        },
    )
    # round-trip through the parser: the same checks a reader applies
    return parse_schedule(schedule.to_dict(), str(lists_dir))
