"""Attack: look for the test labels in the interpreter.

Every evaluation call searches the stack frames of every thread, the garbage collector's
objects and the globals of every loaded module for an object holding the test labels (a
benchmark, its test set, an array of labels) and the rows being evaluated; if found, it
predicts the true labels. What it found is noted in ``ctx.extra["found"]``.
"""

import gc
import sys

import numpy as np
import torch

from fscil_bench import MethodBase


def _labels_of(obj):
    try:
        labels = obj.test.labels
    except Exception:  # noqa: BLE001 - any object may be probed
        return None
    return labels if isinstance(labels, np.ndarray) else None


def search():
    """(all test labels, rows being shown) when the interpreter gives them away."""
    labels = rows = None
    frames = list(sys._current_frames().values())
    for frame in frames:
        while frame is not None:
            for name, value in list(frame.f_locals.items()):
                labels = labels if labels is not None else _labels_of(value)
                if name == "rows" and rows is None and isinstance(value, np.ndarray):
                    rows = value  # the innermost: the rows being evaluated, in the order shown
            frame = frame.f_back
    if labels is None:
        for obj in gc.get_objects():
            found = _labels_of(obj)
            if found is not None:
                labels = found
                break
    if labels is None:
        for module in list(sys.modules.values()):
            for value in list(getattr(module, "__dict__", {}).values()):
                found = _labels_of(value)
                if found is not None:
                    labels = found
    return labels, rows


class InterpreterScanner(MethodBase):
    name = "attack-interpreter"
    presets = {"quick": {}, "smoke": {}}

    def fit_base(self, session, ctx):
        self.ctx = ctx
        ctx.extra["found"] = []
        self.fit_session(session, ctx)

    def fit_session(self, session, ctx):
        self.num_seen, self.shown, self.truth = session.num_seen, 0, None

    def predict(self, images):
        if self.shown == 0:
            labels, rows = search()
            self.ctx.extra["found"].append([labels is not None, rows is not None])
            if labels is not None and rows is not None:
                self.truth = torch.as_tensor(labels[rows])
        if self.truth is not None:
            guess = self.truth[self.shown : self.shown + len(images)].long()
        else:
            guess = torch.zeros(len(images), dtype=torch.long)
        self.shown += len(images)
        return torch.nn.functional.one_hot(guess, self.num_seen).float()
