"""``fscil-bench report``: leaderboards from a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from fscil_bench.cli.common import UserError, command_line


def cmd_report(args: argparse.Namespace) -> int:
    from fscil_bench.reporting.report import ReportError, write_reports
    from fscil_bench.results.store import ResultsStore

    store = ResultsStore(args.runs)
    if not store.root.is_dir():
        raise UserError(f"no results folder at {store.root} (run 'fscil-bench run' first, or pass --runs)")
    command = command_line()
    try:
        written = write_reports(store, Path(args.output), command=command, heatmap_method=args.heatmap_method)
    except ReportError as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:
        raise UserError(f"cannot write reports to {args.output}: {exc.strerror or exc}") from exc
    if not written:
        raise UserError(f"no records under {store.root}")
    for path in written:
        print(f"wrote {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="write leaderboards from the results folder")
    rep.add_argument("--runs", default="runs", help="results folder (default: ./runs)")
    rep.add_argument("--output", "-o", default="reports",
                     help="report folder (default: ./reports; the repository's reference leaderboard is regenerated "
                          "with -o leaderboards)")
    rep.add_argument("--heatmap-method", metavar="NAME",
                     help="method whose session x class-group accuracy matrix is drawn (default: the best "
                          "non-oracle method by average accuracy)")
    rep.set_defaults(func=cmd_report)

