"""Presets: named hyperparameter sets of a method, possibly one per benchmark family.

A method's ``presets`` maps a preset name (``quick``, ``paper``, ``smoke``) to either one
hyperparameter dataclass or a mapping from benchmark family to one (with ``"default"`` for the
families not named). :func:`derive_presets` copies such a table into another hyperparameter
class with some values changed (an ablation shares its parent's presets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def derive_presets(presets: Mapping[str, Any], cls: type | None = None, **changes: Any) -> dict[str, Any]:
    """Copy a method's presets (preset -> hparams, or preset -> family -> hparams), converting each
    hyperparameter set to ``cls`` (default: its own class) with ``changes`` applied."""

    def convert(hp: Any) -> Any:
        values = {f.name: getattr(hp, f.name) for f in dataclasses.fields(hp)}
        return (cls or type(hp))(**{**values, **changes})

    return {
        name: convert(value) if dataclasses.is_dataclass(value) else {fam: convert(hp) for fam, hp in value.items()}
        for name, value in presets.items()
    }
