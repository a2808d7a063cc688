"""The learning-rate schedule every training loop of the package uses.

For step ``s`` of ``N`` (``s = 0 .. N-1``) with peak rate ``lr``, warm-up length ``W`` steps and
cool-down length ``C`` steps:

* warm-up, ``s < W``: linear. With ``warmup_start = None`` the rate climbs from ``lr / W`` to
  ``lr``: ``lr * (s + 1) / W``. With a start factor ``f`` it climbs from ``f * lr`` towards ``lr``:
  ``lr * (f + (1 - f) * s / W)`` (the convention of mmcv's linear warm-up, which starts at
  ``warmup_ratio * lr``).
* cool-down, ``s >= N - C``: the constant ``cooldown_factor * lr``.
* otherwise, by ``shape``:

  - ``"cosine"``: ``floor * lr + (lr - floor * lr) * (1 + cos(pi * p)) / 2`` with progress
    ``p = (s - W) / max(1, N - C - W)``, from ``lr`` down to ``floor * lr`` at the end of the decay;
  - ``"step"``: ``lr * gamma ** k`` where ``k`` counts the milestones ``m`` (in ``units``, e.g.
    epochs, of which the whole run has ``U``) with ``s * U / N >= m``;
  - ``"constant"``: ``lr``.

The warm-up replaces the first ``W`` steps of the shape; the shape's own clock (cosine progress,
milestones) is not shifted for the step schedule, and starts after the warm-up for the cosine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SHAPES = ("cosine", "step", "constant")


def learning_rate(
    step: int,
    total: int,
    lr: float,
    *,
    shape: str = "cosine",
    warmup: int = 0,
    warmup_start: float | None = None,
    floor: float = 0.0,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    units: float | None = None,
    cooldown: int = 0,
    cooldown_factor: float = 0.0,
) -> float:
    """The learning rate at ``step`` of ``total`` (see the module docstring for every term).

    ``units`` is the length of the run in the milestones' unit (epochs); ``None`` means the
    milestones count steps.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown schedule {shape!r}; choose from {', '.join(SHAPES)}")
    if warmup and step < warmup:
        if warmup_start is None:
            return lr * (step + 1) / warmup
        return lr * (warmup_start + (1 - warmup_start) * step / warmup)
    if cooldown and step >= total - cooldown:
        return lr * cooldown_factor
    if shape == "constant":
        return lr
    if shape == "step":
        position = step if units is None else step * units / max(1, total)
        return lr * gamma ** sum(position >= m for m in milestones)
    progress = (step - warmup) / max(1, total - cooldown - warmup)
    low = lr * floor
    return low + (lr - low) * 0.5 * (1 + math.cos(math.pi * progress))
