#!/usr/bin/env python
"""Build fscil-bench schedule files from FSCIL index lists in the standard (TOPIC/CEC) format.

Rebuild the three shipped schedules from the standard lists::

    python scripts/build_schedules.py --standard ../shared/data/index_list

Turn a folder of lists of your own (same format) into a schedule file::

    python scripts/build_schedules.py --lists my_lists/ --format mini_imagenet --out my_split.json

Every list is checked against ``SHA256SUMS`` (in the list folder or its parent, or ``--sums``)
before it is read; pass ``--no-checksums`` for lists that have none. See
each dataset family's ``import_lists`` (``fscil_bench/data/<family>.py``) for what its format means,
``fscil_bench/schedules/lists.py`` for what is checked, and ``fscil_bench/schedules/files.py`` for
the file format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fscil_bench.data.families import FAMILIES, build_schedule
from fscil_bench.schedules.files import ScheduleFileError, write_schedule_file
from fscil_bench.schedules.lists import IndexListError

REPO = Path(__file__).resolve().parent.parent

#: list folder under the standard index_list root -> (format, shipped file)
STANDARD = {
    "cifar100": ("cifar100", "sessions/cifar100.json"),
    "mini_imagenet": ("mini_imagenet", "sessions/mini_imagenet.json"),
    "cub200": ("cub200", "sessions/cub200.json.gz"),
}


def build_one(lists: Path, fmt: str, out: Path, args: argparse.Namespace) -> None:
    schedule = build_schedule(
        lists, fmt, name=args.name, sums=args.sums, check_sums=not args.no_checksums,
        num_classes=args.num_classes, base_classes=args.base_classes,
        train_per_class=args.train_per_class, test_per_class=args.test_per_class,
    )
    write_schedule_file(schedule, out)
    shots = sorted({s.shots for s in schedule.sessions[1:]})
    ways = sorted({s.ways for s in schedule.sessions[1:]})
    print(f"wrote {out}: {schedule.num_classes} classes; base: {schedule.sessions[0].describe()}; "
          f"{len(schedule.sessions) - 1} sessions of {'/'.join(map(str, ways))}-way {'/'.join(map(str, shots))}-shot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--lists", type=Path, metavar="DIR", help="a folder of session_N.txt lists")
    what.add_argument("--standard", type=Path, metavar="INDEX_LIST_ROOT",
                      help="rebuild every shipped schedule from the standard index_list folder")
    parser.add_argument("--format", choices=FAMILIES.names(), help="how the lists name samples (with --lists)")
    parser.add_argument("--out", type=Path, help="schedule file to write, .json or .json.gz (with --lists)")
    parser.add_argument("--name", help="schedule name (default: the format)")
    parser.add_argument("--sums", type=Path, help="SHA256SUMS file (default: in the list folder or its parent)")
    parser.add_argument("--no-checksums", action="store_true", help="do not check the lists against checksums")
    parser.add_argument("--num-classes", type=int, default=100, help="cifar100 format: classes in all (default 100)")
    parser.add_argument("--base-classes", type=int, default=60, help="cifar100 format: base classes (default 60)")
    parser.add_argument("--train-per-class", type=int, default=500, help="cifar100 format: train images per class (default 500)")
    parser.add_argument("--test-per-class", type=int, default=100, help="cifar100 format: test images per class (default 100)")
    parser.add_argument("--sessions-dir", type=Path, default=REPO / "sessions",
                        help="with --standard: where the shipped files go (default: the repo's sessions/)")
    args = parser.parse_args(argv)
    try:
        if args.standard is not None:
            for folder, (fmt, shipped) in STANDARD.items():
                build_one(args.standard / folder, fmt, args.sessions_dir / Path(shipped).name, args)
        else:
            if args.format is None or args.out is None:
                parser.error("--lists needs --format and --out")
            build_one(args.lists, args.format, args.out, args)
    except (IndexListError, ScheduleFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
