"""Tracks: which leaderboard a run belongs to, decided before it runs.

A run whose backbone starts from weights trained on data beyond the benchmark competes in a
track of its own and is never ranked against runs trained on the benchmark alone. The track
follows from the resolved hyperparameters' ``pretrained`` (a known weights name or a file, see
:mod:`fscil_bench.models.weights`): ``scratch`` without one, ``pretrained-<weights>`` with one.
:func:`track_of` is the one definition; the grid, the executors and the report all call it (the
report for records written before records carried their track).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fscil_bench.models.weights import KNOWN_WEIGHTS

SCRATCH = "scratch"
PRETRAINED_PREFIX = "pretrained-"


def weights_label(reference: str) -> str:
    """A known weights name as it is; a file by its stem, reduced to ``[A-Za-z0-9._-]``."""
    if reference in KNOWN_WEIGHTS:
        return reference
    stem = Path(reference).name
    for suffix in (".safetensors", ".pth.tar", ".pth", ".pt", ".bin"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "file"


def pretrained_reference(hparams: Any) -> str | None:
    """The ``pretrained`` value of a hyperparameter dataclass or mapping (None when absent or empty)."""
    value = hparams.get("pretrained") if isinstance(hparams, Mapping) else getattr(hparams, "pretrained", None)
    return str(value) if value else None


def track_of(hparams: Any) -> str:
    """The track of a run with these (resolved) hyperparameters."""
    reference = pretrained_reference(hparams)
    return SCRATCH if reference is None else PRETRAINED_PREFIX + weights_label(reference)


def method_track(method_cls: type, preset: str, family: str) -> str:
    """The track of ``method_cls`` under ``preset`` on a benchmark ``family``, without overrides
    (``scratch`` when the preset does not resolve: that run fails and records why). A run's track
    is that of its preset as resolved with the overrides (``ResolvedPreset.track`` of
    :mod:`fscil_bench.run.overrides`)."""
    try:
        hparams = method_cls.resolve_preset(preset, family)
    except (AttributeError, KeyError):
        return SCRATCH
    return track_of(hparams)


def record_track(record: Mapping[str, Any]) -> str:
    """The track a record states, or the one its hyperparameters imply (older records)."""
    if record.get("track"):
        return str(record["track"])
    return track_of(((record.get("config") or {}).get("hparams")) or {})


def record_weights(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a record says about its pretrained weights (name, sha256, training data, overlaps)."""
    weights = (record.get("extra") or {}).get("pretrained")
    return dict(weights) if isinstance(weights, Mapping) else None


def overlapping_families(record: Mapping[str, Any]) -> list[str]:
    """The benchmark's family when the record's weights were trained on data holding its classes:
    from what the record states, or from the known weights' declaration (older records)."""
    weights = record_weights(record) or {}
    overlaps = set(weights.get("overlaps") or ())
    name = weights.get("name") or pretrained_reference((record.get("config") or {}).get("hparams") or {})
    if name in KNOWN_WEIGHTS:
        overlaps |= set(KNOWN_WEIGHTS.get(name).overlaps)
    family = (record.get("benchmark") or {}).get("family")
    return [family] if family in overlaps else []
