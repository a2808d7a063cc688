"""``fscil-bench data verify``: check a real data set on disk against a benchmark's schedule.

Checks, in order (a failed layout or index check stops the rest, which would only repeat it):

1. layout - the files and folders the loader expects are there;
2. index - the index files read (pickles, split CSVs, ``images.txt`` and friends);
3. counts - images per split and per class, against what the schedule file records about the
   data set it was built for;
4. class order - the data set's classes are the schedule's, in the schedule's order;
5. schedule - every scheduled training sample exists and belongs to its session's classes (and
   the base session's "all training samples" rule holds);
6. files - every image file the index lists exists (no image is decoded).

These are the steps a benchmark load takes (the dataset family's ``check_layout``, ``index`` and
file check, then the schedule), run as a report: every problem is printed with what was expected
where, instead of stopping at the first. The exit status is 0 when all pass, 2 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from fscil_bench.benchmarks.benchmark import BenchmarkError
from fscil_bench.benchmarks.real import (
    REAL_BENCHMARKS,
    global_labels,
    resolve_data_root,
)
from fscil_bench.data.families import get_family
from fscil_bench.data.family import DatasetIndex
from fscil_bench.data.image_files import DatasetError
from fscil_bench.schedules.files import (
    ScheduleFile,
    ScheduleFileError,
    read_schedule_file,
)

T = TypeVar("T")


@dataclass
class Report:
    """Check results: ``(status, check, message)`` with status ``ok``, ``FAIL``, ``warn`` or ``info``."""

    title: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, status: str, check: str, message: str) -> None:
        self.rows.append((status, check, message))

    @property
    def failures(self) -> list[tuple[str, str, str]]:
        return [r for r in self.rows if r[0] == "FAIL"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        lines = [self.title]
        lines += [f"  {status:5s} {check:12s} {message}" for status, check, message in self.rows]
        if self.ok:
            lines.append("all checks passed")
        else:
            lines.append(f"{len(self.failures)} check(s) failed")
        return "\n".join(lines)


def _counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels[(labels >= 0) & (labels < num_classes)], minlength=num_classes)


def _compare_counts(report: Report, split: str, counts: np.ndarray, expected: list[int] | None, where: str) -> None:
    total = int(counts.sum())
    spread = f"{counts.min()}-{counts.max()}" if counts.min() != counts.max() else f"{counts.min()}"
    if expected is None:
        report.add("ok", "counts", f"{split}: {total} images, {spread} per class")
        return
    expected_arr = np.asarray(expected)
    bad = np.flatnonzero(counts != expected_arr)
    if len(bad):
        shown = ", ".join(f"class {c}: {counts[c]} (expected {expected_arr[c]})" for c in bad[:4])
        more = f" and {len(bad) - 4} more classes" if len(bad) > 4 else ""
        report.add("FAIL", "counts", f"{split}: {total} images, expected {int(expected_arr.sum())} per {where}; {shown}{more}")
    else:
        report.add("ok", "counts", f"{split}: {total} images, {spread} per class, as {where} expects")


def verify_real(family: str, data_root: Path, schedule: str | Path | None = None) -> Report:
    """Check ``family``'s data set under ``data_root`` against its shipped (or the given) schedule."""
    reader = get_family(family)
    report = Report(f"{family}: checking {reader.expected_layout(reader.find_root(data_root))}")
    try:
        sched = read_schedule_file(schedule if schedule is not None else family)
    except ScheduleFileError as exc:
        report.add("FAIL", "schedule", str(exc))
        return report
    where = sched.path
    report.title += f" against {where}"
    folder = _step(report, "layout", lambda: reader.check_layout(data_root), lambda f: f"found {f}")
    disk = folder and _step(report, "index", lambda: reader.index(folder),
                            lambda d: f"{len(d.train)} train and {len(d.test)} test images listed")
    if disk is None:  # the other checks would only repeat the failure
        return report

    # class order (before counts: counts are per global class)
    labels_ok = True
    try:
        train_labels, test_labels = global_labels(family, disk, sched)
    except DatasetError as exc:
        report.add("FAIL", "class order", str(exc))
        labels_ok = False
    if labels_ok:
        _check_class_order(report, disk, sched)
        _check_counts(report, disk, sched, train_labels, test_labels)
        try:
            schedule_obj = sched.to_schedule(disk.train.ids, train_labels)
        except ScheduleFileError as exc:
            report.add("FAIL", "schedule", str(exc))
        else:
            fewshot = sum(len(s.train_indices) for s in schedule_obj.sessions[1:])
            report.add("ok", "schedule", f"{len(schedule_obj)} sessions; base: {sched.sessions[0].describe()}; "
                                         f"{fewshot} few-shot samples, every one present with its session's class")
            if sched.sessions[0].ids is not None:
                base = sched.sessions[0]
                full = int(np.isin(train_labels, base.classes).sum())
                note = f"all {full}" if full == base.count else f"{base.count} of the {full}"
                report.add("info", "schedule", f"the base session lists {note} training images of classes "
                                               f"{base.first_class}-{base.first_class + base.ways - 1}")
            test_after = [int((test_labels < schedule_obj.num_seen(t)).sum()) for t in range(len(schedule_obj))]
            report.add("info", "test set", "test images after each session: " + ", ".join(map(str, test_after)))
    for split, problem in reader.missing_files(disk):
        if problem is not None:
            report.add("FAIL", "files", problem)
        else:
            report.add("ok", "files", f"all {len(split)} {split.split} images listed in {split.source.name} exist")
    return report


def _step(report: Report, check: str, action: Callable[[], T], ok: Callable[[T], str]) -> T | None:
    """Run one loading step: its result, reported "ok"; or None, with its error reported as a failure."""
    try:
        value = action()
    except DatasetError as exc:
        report.add("FAIL", check, str(exc))
        return None
    report.add("ok", check, ok(value))
    return value


def _check_class_order(report: Report, disk: DatasetIndex, sched: ScheduleFile) -> None:
    names = disk.train.class_names
    present = sorted(set(disk.train.labels.tolist()))
    if sched.class_names is None:
        if len(present) != sched.num_classes or present != list(range(sched.num_classes)):
            report.add("FAIL", "class order", f"{disk.train.source} has training images of {len(present)} classes "
                                              f"(ids {present[0]}..{present[-1]}), the schedule expects ids "
                                              f"0..{sched.num_classes - 1}")
        else:
            report.add("ok", "class order", f"{sched.num_classes} classes, ids = the data set's labels")
        return
    ours = [names[c] for c in present]
    if ours == sched.class_names:
        report.add("ok", "class order", f"{len(ours)} classes in the schedule's order ({ours[0]} .. {ours[-1]})")
    elif sorted(ours) == sorted(sched.class_names):
        first = next(i for i, (a, b) in enumerate(zip(ours, sched.class_names)) if a != b)
        report.add("warn", "class order", f"{disk.train.source} lists the classes in another order than the schedule "
                                          f"(position {first}: {ours[first]} vs {sched.class_names[first]}); "
                                          f"classes are matched by name, so runs use the schedule's order")
    else:
        lacking = [n for n in sched.class_names if n not in set(ours)]
        report.add("FAIL", "class order", f"{disk.train.source} has {len(ours)} classes, the schedule {len(sched.class_names)}; "
                                          f"missing: {', '.join(lacking[:5]) or '-'}")


def _check_counts(report: Report, disk: DatasetIndex, sched: ScheduleFile, train_labels: np.ndarray, test_labels: np.ndarray) -> None:
    n = sched.num_classes
    where = f"the schedule ({sched.path})"
    _compare_counts(report, "train", _counts(train_labels, n), sched.per_class("train_per_class"), where)
    _compare_counts(report, "test", _counts(test_labels, n), sched.per_class("test_per_class"), where)
    for split, labels in (("train", train_labels), ("test", test_labels)):
        key = f"{split}_total"
        if key in sched.expected and len(labels) != sched.expected[key]:
            report.add("FAIL", "counts", f"{split}: {len(labels)} images, the full data set has {sched.expected[key]} "
                                         f"(recorded in {sched.path})")
    if "num_images" in sched.expected and len(train_labels) + len(test_labels) != sched.expected["num_images"]:
        report.add("FAIL", "counts", f"{len(train_labels) + len(test_labels)} images in all, the full data set has "
                                     f"{sched.expected['num_images']}")


def verify_data(benchmark: str, data_root: str | Path | None, schedule: str | Path | None = None,
                download: bool = False, out: Callable[[str], None] = print) -> int:
    """Run the checks for ``benchmark`` (a real benchmark name, or a custom ``.yaml`` that names a
    real data set) and print the report; return 0 when all pass, 2 otherwise."""
    family = benchmark.partition("@")[0]
    if family.lower().endswith((".yaml", ".yml")):
        from fscil_bench.benchmarks.custom import _read_yaml

        path = Path(family)
        doc = _read_yaml(path)
        if doc.get("dataset") not in REAL_BENCHMARKS:
            raise BenchmarkError(f"{path} describes an image-folder benchmark; 'data verify' checks the real data sets "
                                 f"({', '.join(REAL_BENCHMARKS)}) - run it with 'fscil-bench run --benchmark {path}' "
                                 f"instead")
        family = doc["dataset"]
        if schedule is None and isinstance(doc.get("schedule"), str):
            schedule = Path(doc["schedule"]) if Path(doc["schedule"]).is_absolute() else path.parent / doc["schedule"]
        if data_root is None and doc.get("root") is not None:
            data_root = path.parent / str(doc["root"])
    if family not in REAL_BENCHMARKS:
        raise BenchmarkError(f"'data verify' checks the real data sets: {', '.join(REAL_BENCHMARKS)} (not {benchmark!r})")
    root = resolve_data_root(family, data_root)
    if download:
        reader = get_family(family)
        try:
            reader.check_layout(root)
        except DatasetError:
            try:
                reader.download(root, log=out)
            except DatasetError as exc:
                raise BenchmarkError(str(exc)) from exc
    report = verify_real(family, root, schedule)
    out(report.render())
    return 0 if report.ok else 2
