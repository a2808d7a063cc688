"""Input checks and small helpers shared by the metric modules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

NAN = float("nan")


def as_int_array(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; integral floats are accepted, anything else is an error."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise ValueError(f"{what} must hold integer class ids, got a boolean array")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    raise ValueError(f"{what} must hold integer class ids, got dtype {arr.dtype}")


def check_groups(groups: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Validated ``groups`` as a list of ``(start, stop)`` int pairs."""
    out: list[tuple[int, int]] = []
    expected_start = 0
    if len(groups) == 0:
        raise ValueError("groups is empty: a schedule needs at least the base session")
    for g, grp in enumerate(groups):
        try:
            start, stop = (int(v) for v in grp)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"groups[{g}] must be a (start, stop) pair of ints, got {grp!r}") from exc
        if start != expected_start:
            raise ValueError(
                f"groups must be contiguous and ascending from 0: groups[{g}] starts at {start}, "
                f"expected {expected_start}"
            )
        if stop <= start:
            raise ValueError(f"groups[{g}] = ({start}, {stop}) introduces no classes (need stop > start)")
        out.append((start, stop))
        expected_start = stop
    return out


def nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN if there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else NAN


def json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
