"""``fscil-bench data verify``: check a real dataset on disk against its schedule."""

from __future__ import annotations

import argparse
import os

from fscil_bench.cli.common import UserError
from fscil_bench.defaults import DATA_ROOT_ENV


def cmd_data_verify(args: argparse.Namespace) -> int:
    from fscil_bench.benchmarks.benchmark import BenchmarkError
    from fscil_bench.benchmarks.verify import verify_data

    try:
        return verify_data(args.benchmark, args.data_root, schedule=args.schedule, download=args.download)
    except BenchmarkError as exc:
        raise UserError(str(exc)) from exc


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check real data sets on disk").add_subparsers(dest="data_command", required=True)
    ver = data.add_parser("verify", help="check a data set's layout, counts, class order and every scheduled sample")
    ver.add_argument("--benchmark", "-b", required=True, help="cifar100, mini_imagenet, cub200 (or a custom .yaml naming one)")
    ver.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV), help=f"folder holding real datasets (default: ${DATA_ROOT_ENV})")
    ver.add_argument("--schedule", help="a schedule file to check against instead of the shipped one")
    ver.add_argument("--download", action="store_true", help="download the data set first if it is missing (CIFAR-100 only)")
    ver.set_defaults(func=cmd_data_verify)
