"""``fscil-bench recipe``: the fully resolved recipe of a run, every value with its source, without training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fscil_bench.cli.common import UserError
from fscil_bench.defaults import default_cache_dir

PROVENANCE_LABEL = {"source": "published", "our_choice": "our choice", "inert": "unused", "": ""}


def cmd_recipe(args: argparse.Namespace) -> int:
    from fscil_bench.benchmarks.benchmark import BenchmarkError
    from fscil_bench.benchmarks.registry import get_benchmark
    from fscil_bench.registry import UnknownName
    from fscil_bench.reporting.recipes import resolve_recipe
    from fscil_bench.run.methods import PluginError, discover

    registry = discover(args.plugin or [])
    try:
        method_cls = registry.get(args.method)
        spec = get_benchmark(args.benchmark)
    except (PluginError, BenchmarkError, UnknownName) as exc:
        raise UserError(str(exc)) from exc
    weights_dir = Path(args.weights_dir) if args.weights_dir else default_cache_dir() / "weights"
    try:
        recipe = resolve_recipe(args.method, method_cls, args.preset, spec.id, spec.family, weights_dir)
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc.args[0]) if exc.args else str(exc)) from exc
    if args.json:
        print(json.dumps(recipe, indent=2))
    else:
        print(render(recipe))
    return 0


def _value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def render(recipe: dict) -> str:
    """The recipe as text: a header, one line per value with its provenance, then views,
    weights, precision and checkpoint rule."""
    from tabulate import tabulate

    lines = [f"{recipe['method']} [{recipe['preset']}] on {recipe['benchmark']} (family {recipe['family']})"]
    if recipe["paper"]:
        lines.append(f"  {recipe['paper']}")
    if recipe["note"]:
        lines.append(f"  {recipe['note']}")
    if recipe["official_table"]:
        lines.append("  sources: " + "; ".join(f"{k} = {v}" for k, v in recipe["sources"].items()))
    else:
        lines.append("  (not a published recipe the suite's table lists: no provenance shown)")
    rows = [[v["field"], _value(v["value"]), PROVENANCE_LABEL.get(v["provenance"], v["provenance"]), v["detail"]]
            for v in recipe["values"]]
    lines += ["", tabulate(rows, headers=["field", "value", "", "source / why"], tablefmt="plain"), ""]
    for role in ("train", "test"):
        view = recipe["views"][role]
        where = f" ({view['source']})" if view.get("source") else ""
        lines.append(f"{role} view: {view['name'] or 'benchmark'}: {view['description']}{where}")
    lines.append(f"weights: {_weights(recipe['pretrained'])}")
    lines.append(f"precision: {recipe['precision']}")
    rule = recipe["base_checkpoint"]
    clean = "" if rule["protocol_clean"] else " (NOT protocol-clean: chosen on test labels)"
    lines.append(f"base checkpoint: {rule['rule']}{clean}")
    return "\n".join(lines)


def _weights(weights: dict | None) -> str:
    if weights is None:
        return "none (the backbone is trained from scratch on the benchmark)"
    if "file" not in weights:
        return f"{weights['reference']} (a file of your own; extra data)"
    where = "present" if weights["present"] else f"MISSING: fscil-bench weights fetch {weights['reference']}"
    return f"{weights['reference']} = {weights['file']} ({weights['trained_on']}; extra data; {where})"


def add_parser(sub: argparse._SubParsersAction) -> None:
    recipe = sub.add_parser("recipe", help="print the fully resolved recipe of a run (every value and its source), "
                                           "without training")
    recipe.add_argument("--method", "-m", required=True, help="method name")
    recipe.add_argument("--benchmark", "-b", default="glyphs100", help="benchmark name (default: glyphs100)")
    recipe.add_argument("--preset", default="paper",
                        help="preset, optionally with '+validation' or '+best-on-test' (default: paper)")
    recipe.add_argument("--json", action="store_true", help="print JSON")
    recipe.add_argument("--plugin", action="append", metavar="FILE.py", help="a Python file defining extra methods")
    recipe.add_argument("--weights-dir", help="folder of known pretrained weights files (default: <cache>/weights)")
    recipe.set_defaults(func=cmd_recipe)
