"""The learning-rate schedule every training loop of the package uses, in two conventions.

For step ``s`` of ``N`` (``s = 0 .. N-1``) with peak rate ``lr``, warm-up length ``W`` steps and
cool-down length ``C`` steps.

**The package's convention** (``convention="fscil-bench"``):

* warm-up, ``s < W``: linear. With ``warmup_start = None`` the rate climbs from ``lr / W`` to
  ``lr``: ``lr * (s + 1) / W``. With a start factor ``f`` it climbs from ``f * lr`` towards ``lr``:
  ``lr * (f + (1 - f) * s / W)``.
* cool-down, ``s >= N - C``: the constant ``cooldown_factor * lr``.
* otherwise, by ``shape``:

  - ``"cosine"``: ``floor * lr + (lr - floor * lr) * (1 + cos(pi * p)) / 2`` with progress
    ``p = (s - W) / max(1, N - C - W)``, from ``lr`` down to ``floor * lr`` at the end of the decay;
  - ``"step"``: ``lr * gamma ** k`` where ``k`` counts the milestones ``m`` (in ``units``, e.g.
    epochs, of which the whole run has ``U``) with ``s * U / N >= m``;
  - ``"constant"``: ``lr``.

The warm-up replaces the first ``W`` steps of the shape; the shape's own clock (cosine progress,
milestones) is not shifted for the step schedule, and starts after the warm-up for the cosine.

**mmcv's convention** (``convention="mmcv"``; mmcv 1.6.1's ``LrUpdaterHook`` family and
NC-FSCIL's ``CosineAnnealingCooldownLrUpdaterHook``, open-mmlab/mmcv@d409eed
``mmcv/runner/hooks/lr_updater.py:87-99,170-218,268-300`` and
NeuralCollapseApplications/FSCIL@37a5475 ``mmcls/core/hook/lr_updater.py:47-65``), the regular
rate ``reg(s)`` on a clock that starts at 0:

* ``"cosine"``: ``lr * (floor + (1 - floor) * (1 + cos(pi * s / (N - C))) / 2)`` for ``s <= N - C``,
  then ``cooldown_factor * lr`` for ``s > N - C`` (so the cosine reaches its floor at ``s = N - C``
  and the cool-down covers the last ``C - 1`` steps);
* ``"step"``: ``lr * gamma ** k`` where ``k`` counts the milestones ``m <= e``; ``e`` is the
  position in milestone units, advanced once per epoch of ``epoch_length`` steps by
  ``epoch_units`` (mmcv's ``by_epoch``: ``e = floor(s / epoch_length) * epoch_units``), or ``e = s``;
* ``"constant"``: ``lr``;
* the linear warm-up **multiplies** the regular rate: ``reg(s) * (f + (1 - f) * s / W)`` for ``s < W``.

In both conventions ``step`` counts from the schedule's own origin: a caller whose counter is
advanced before the rate is set (NC-FSCIL's incremental sessions, whose first step is ``s = 1``)
passes the counter's value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SHAPES = ("cosine", "step", "constant")
CONVENTIONS = ("fscil-bench", "mmcv")


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
    convention: str = "fscil-bench",
    epoch_length: int | None = None,
    epoch_units: float = 1.0,
) -> float:
    """The learning rate at ``step`` of ``total`` (see the module docstring for every term).

    ``units`` is the length of the run in the milestones' unit (epochs); ``None`` means the
    milestones count steps. ``epoch_length`` and ``epoch_units`` are mmcv's per-epoch clock of the
    step shape (ignored in the package's convention).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown schedule {shape!r}; choose from {', '.join(SHAPES)}")
    if convention == "mmcv":
        return _mmcv(step, total, lr, shape, warmup, 0.0 if warmup_start is None else warmup_start, floor,
                     milestones, gamma, cooldown, cooldown_factor, epoch_length, epoch_units)
    if convention != "fscil-bench":
        raise ValueError(f"unknown learning-rate convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
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


def _mmcv(step: int, total: int, lr: float, shape: str, warmup: int, warmup_ratio: float, floor: float,
          milestones: Sequence[float], gamma: float, cooldown: int, cooldown_factor: float,
          epoch_length: int | None, epoch_units: float) -> float:
    if shape == "constant":
        regular = lr
    elif shape == "step":
        position = step if epoch_length is None else (step // epoch_length) * epoch_units
        regular = lr * gamma ** sum(position >= m for m in milestones)
    else:
        span = max(1, total - cooldown)
        if cooldown and step > span:
            regular = lr * cooldown_factor
        else:
            regular = lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / span)))
    if warmup and step < warmup:
        return regular * (warmup_ratio + (1 - warmup_ratio) * step / warmup)
    return regular
