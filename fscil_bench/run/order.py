"""The hidden evaluation order: in which order, and in which batches, a session's test images
reach the method.

The test set is stored sorted by class, so handing it over in stored order would tell a method
each image's class by its position, and would give a batch-dependent method (BatchNorm in
training mode, transductive inference, test-time adaptation) class-pure batches that no real
deployment gives it. Instead, after every session the runner draws a fresh 63-bit seed from the
operating system's random source (:mod:`secrets`), which nothing the method is given (the run
seed, the benchmark, earlier sessions) determines, and hands over the test images of the seen
classes permuted by it, in consecutive batches of ``batch_size``. Predictions and features are
mapped back to test-set order before anything is stored or scored.

Replaying a run's exact batches needs only its record: ``evaluation_order`` holds each
session's seed, and the permutation of session ``t`` is
``numpy.random.default_rng(seeds[t]).permutation(n_t)`` over the test rows of the classes seen
after session ``t``, taken in test-set order (:func:`permutation`). Pass the seeds back as
``RunOptions(order_seeds=...)`` to evaluate in the same batches again.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np

ALGORITHM = "numpy.random.default_rng(seed).permutation(n) over the seen classes' test rows in test-set order"


def draw_seed() -> int:
    """A fresh seed from the operating system's random source."""
    return secrets.randbits(63)


def permutation(seed: int, n: int) -> np.ndarray:
    """The order in which ``n`` test rows are shown for ``seed``: ``order[i]`` is the position, in
    test-set order, of the ``i``-th image shown."""
    return np.random.default_rng(seed).permutation(n)


def restore(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values`` given in the shown ``order``, put back in test-set order (along axis 0)."""
    out = np.empty_like(values)
    out[order] = values
    return out


class EvaluationOrder:
    """The seeds of one run's sessions: fresh ones, or those of a record to replay."""

    def __init__(self, batch_size: int, replay: Sequence[int] | None = None):
        self.batch_size = batch_size
        self._replay = list(replay) if replay is not None else None
        self.seeds: list[int] = []

    def next(self, n: int) -> np.ndarray:
        """The order of the next session's ``n`` test rows."""
        t = len(self.seeds)
        if self._replay is None:
            seed = draw_seed()
        elif t < len(self._replay):
            seed = int(self._replay[t])
        else:
            raise ValueError(f"order_seeds has {len(self._replay)} seeds; session {t} needs one more")
        self.seeds.append(seed)
        return permutation(seed, n)

    def to_record(self) -> dict[str, Any]:
        return {"algorithm": ALGORITHM, "batch_size": self.batch_size, "seeds": list(self.seeds),
                "replayed": self._replay is not None}
