"""``fscil-bench weights``: the pretrained weights the suite knows, and fetching them (needs a network)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fscil_bench.cli.common import UserError
from fscil_bench.defaults import default_cache_dir


def weights_folder(args: argparse.Namespace) -> Path:
    return Path(args.weights_dir) if args.weights_dir else default_cache_dir() / "weights"


def cmd_list(args: argparse.Namespace) -> int:
    from fscil_bench.models.weights import KNOWN_WEIGHTS

    folder = weights_folder(args)
    print(f"Known weights (folder {folder}; none is shipped, 'fscil-bench weights fetch NAME' downloads one):")
    for name in KNOWN_WEIGHTS.names():
        spec = KNOWN_WEIGHTS.get(name)
        present = "present" if (folder / spec.file).is_file() else "missing"
        print(f"  {name:36s} {spec.backbone:30s} {present:8s} {spec.trained_on}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from fscil_bench.models.weights import KNOWN_WEIGHTS, WeightsError, fetch_weights
    from fscil_bench.registry import UnknownName

    try:
        KNOWN_WEIGHTS.get(args.name)
        path = fetch_weights(args.name, weights_folder(args))
    except (UnknownName, WeightsError) as exc:
        raise UserError(str(exc)) from exc
    print(f"{args.name}: {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="pretrained weights: list the known ones, fetch one (needs a network)")
    actions = weights.add_subparsers(dest="weights_command", required=True)
    folder_help = "where known weights files live (default: <cache>/weights, as 'fscil-bench run --weights-dir')"
    listing = actions.add_parser("list", help="the known weights and whether each is in the weights folder")
    listing.add_argument("--weights-dir", help=folder_help)
    listing.set_defaults(func=cmd_list)
    fetch = actions.add_parser("fetch", help="download known weights into the weights folder and check them")
    fetch.add_argument("name", help="a known weights name (see 'fscil-bench weights list')")
    fetch.add_argument("--weights-dir", help=folder_help)
    fetch.set_defaults(func=cmd_fetch)
