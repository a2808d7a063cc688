"""The ``fscil-bench`` command.

One module per command (``run``, ``list``, ``report``, ``data verify``, ``weights``, ``recipe``), each with its
``add_parser``; a new command is a module and one line in :data:`COMMANDS`. Errors a user can
fix (unknown names, unwritable folders, missing data) print one line starting with ``error:``
and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import sys

from fscil_bench.cli import data, listing, recipe, report, run, weights
from fscil_bench.cli.common import UserError

COMMANDS = (run, listing, report, data, weights, recipe)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fscil-bench", description="Few-shot class-incremental learning benchmark suite.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; rerun the same command to continue", file=sys.stderr)
        return 130


