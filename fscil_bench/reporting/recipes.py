"""The published recipes as data, and the fully resolved recipe of a run.

``recipes_official.json`` (next to this module) lists, for every built-in method and dataset
family, every field of the ``paper`` preset with its value and where it comes from: the
official code (``source``: a key of its ``sources`` and a file:line), ``our_choice`` (why), or
``inert`` (a field the recipe does not use). :func:`official_values` resolves the table's
blocks; :func:`flat_hparams` flattens a preset the same way (``base.lr``, ``base.batch_mix.probs``);
``tests/test_recipes.py`` holds every ``paper`` preset against the table, so a preset that drifts
from the published values fails. :func:`resolve_recipe` gathers everything ``fscil-bench recipe``
prints about one run: every value with its provenance, the views, the pretrained weights, the
precision and the base checkpoint rule.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fscil_bench.data.views import VIEWS
from fscil_bench.models.weights import KNOWN_WEIGHTS
from fscil_bench.protocol import hparams_to_dict

TABLE_PATH = Path(__file__).with_name("recipes_official.json")
PROVENANCE = ("source", "our_choice", "inert")


@lru_cache(maxsize=1)
def official_table() -> dict[str, Any]:
    """The checked-in table of published values (``recipes_official.json``)."""
    return json.loads(TABLE_PATH.read_text())


def _block(name: str, table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entries of block ``name`` (``block@prefix.`` prefixes every key), nested includes first."""
    block_name, _, prefix = name.partition("@")
    block = table["blocks"][block_name]
    out: dict[str, dict[str, Any]] = {}
    for inner in block.get("include", []):
        out.update(_block(inner, table))
    out.update({k: v for k, v in block.items() if k != "include"})
    return {prefix + k: v for k, v in out.items()}


def official_values(method: str, family: str, table: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{field path: entry}`` of ``method``'s published recipe on ``family`` (KeyError when the
    table has none). An entry holds ``value`` and one of ``source``, ``our_choice``, ``inert``."""
    table = table or official_table()
    entry = table["recipes"][method][family]
    out: dict[str, dict[str, Any]] = {}
    if "same_as" in entry:
        other_method, _, other_family = entry["same_as"].rpartition("/")
        out.update(official_values(other_method or method, other_family, table))
    for name in entry.get("include", []):
        out.update(_block(name, table))
    out.update(entry.get("values", {}))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def flat_hparams(hparams: Any) -> dict[str, Any]:
    """A preset as ``{dotted field path: value}`` (nested recipes flattened, tuples as lists)."""

    def walk(d: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(walk(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = _jsonable(value)
        return out

    return walk(hparams_to_dict(hparams), "")


def recipe_differences(method: str, family: str, hparams: Any) -> list[str]:
    """Every way ``hparams`` differs from the table's recipe of ``method`` on ``family``: a field
    the table lacks, a listed field the preset lacks, a different value, an entry without provenance."""
    expected = official_values(method, family)
    actual = flat_hparams(hparams)
    problems = [f"{k}: in the preset ({actual[k]!r}) but not in the table" for k in sorted(set(actual) - set(expected))]
    problems += [f"{k}: in the table but not in the preset" for k in sorted(set(expected) - set(actual))]
    for key in sorted(set(actual) & set(expected)):
        entry = expected[key]
        if actual[key] != entry["value"]:
            problems.append(f"{key}: preset {actual[key]!r}, published {entry['value']!r}")
        if sum(p in entry for p in PROVENANCE) != 1:
            problems.append(f"{key}: the table entry needs exactly one of {', '.join(PROVENANCE)}")
    return problems


def _provenance(entry: dict[str, Any] | None) -> tuple[str, str]:
    if entry is None:
        return "", ""
    for kind in PROVENANCE:
        if kind in entry:
            return kind, str(entry[kind])
    return "", ""


def _view(name: str | None) -> dict[str, Any]:
    if not name:
        return {"name": None, "description": "the benchmark's standard transform"}
    view = VIEWS.get(name)
    return {"name": name, "description": view.description, "source": view.source}


def resolve_recipe(method: str, method_cls: type, preset: str, benchmark: str, family: str,
                   weights_dir: Path | None = None) -> dict[str, Any]:
    """Everything a run of ``method`` with ``preset`` on ``benchmark`` (of ``family``) trains with,
    without training: every hyperparameter with its provenance (for a ``paper`` preset of a
    family the table lists), the views, the weights, the precision and the base checkpoint rule."""
    hparams = method_cls.resolve_preset(preset, family)
    table = official_table()
    official: dict[str, dict[str, Any]] = {}
    if preset.partition("+")[0] == "paper" and family in table["recipes"].get(method, {}):
        official = official_values(method, family)
    values = []
    for key, value in flat_hparams(hparams).items():
        kind, detail = _provenance(official.get(key))
        values.append({"field": key, "value": value, "provenance": kind, "detail": detail})
    reference = getattr(hparams, "pretrained", None)
    pretrained = None
    if reference:
        pretrained = {"reference": reference}
        if reference in KNOWN_WEIGHTS:
            spec = KNOWN_WEIGHTS.get(reference)
            present = weights_dir is not None and (Path(weights_dir) / spec.file).is_file()
            pretrained.update(file=spec.file, url=spec.url, trained_on=spec.trained_on,
                              overlaps=list(spec.overlaps), present=present)
    base = getattr(hparams, "base", None)
    rule = getattr(base, "checkpoint", "last") if dataclasses.is_dataclass(base) else "last"
    return {
        "method": method,
        "paper": getattr(method_cls, "paper", ""),
        "note": table["recipes"].get(method, {}).get("note", "") if official else "",
        "preset": preset,
        "benchmark": benchmark,
        "family": family,
        "official_table": bool(official),
        "values": values,
        "views": {"train": _view(getattr(hparams, "train_view", None)), "test": _view(getattr(hparams, "test_view", None))},
        "pretrained": pretrained,
        "extra_data": bool(pretrained) or bool(getattr(method_cls, "extra_data", None)),
        "precision": "float32 (bfloat16 autocast only with 'fscil-bench run --bf16')",
        "base_checkpoint": {"rule": rule, "protocol_clean": rule != "best-on-test"},
        "sources": table["sources"] if official else {},
    }
