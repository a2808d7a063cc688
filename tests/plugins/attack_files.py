"""Attack: read the benchmark's data from disk and label the test images by their content.

It opens the dataset cache (``ctx.cache_dir / "datasets"``), the data root and the results
folder (their paths come from ``ATTACK_DATA_ROOT`` and ``ATTACK_RESULTS``: an attacker would
guess them), notes what it could read in ``ctx.extra["reads"]``, and if the cached test set with
its labels is readable, predicts each test image's stored label (matched by the exact tensor the
evaluation transform makes of it).
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from fscil_bench import MethodBase


def _try(reads, path, read):
    try:
        reads[str(path)] = read(path)
    except Exception as exc:  # noqa: BLE001 - the attack notes every refusal
        reads[str(path)] = f"denied: {type(exc).__name__}"


def _digest(x):
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()


class FileThief(MethodBase):
    name = "attack-files"
    presets = {"quick": {}, "smoke": {}}

    def fit_base(self, session, ctx):
        reads, self.answers = {}, {}
        datasets = Path(ctx.cache_dir) / "datasets"
        _try(reads, datasets, lambda p: f"listed {len(os.listdir(p))} entries")
        for data in sorted(datasets.glob("*/data.npz")):
            _try(reads, data, lambda p: self._steal(p, session))
        for env in ("ATTACK_DATA_ROOT", "ATTACK_RESULTS"):
            root = Path(os.environ.get(env, "/nonexistent"))
            _try(reads, root, lambda p: f"listed {len(os.listdir(p))} entries")
            for path in sorted(p for p in root.rglob("*") if p.is_file())[:5] if root.is_dir() else []:
                _try(reads, path, lambda p: f"read {len(p.read_bytes())} bytes")
        ctx.extra["reads"] = reads
        self.fit_session(session, ctx)

    def _steal(self, path, session):
        with np.load(path) as data:
            images, labels = data["test_images"], data["test_labels"]
        transform = session.train.eval_transform
        for start in range(0, len(images), 256):
            x = transform(torch.from_numpy(images[start : start + 256]), None)
            for row, label in zip(x, labels[start : start + 256]):
                self.answers[_digest(row)] = int(label)
        return f"stole {len(labels)} test labels"

    def fit_session(self, session, ctx):
        self.num_seen = session.num_seen

    def predict(self, images):
        guess = torch.tensor([min(self.answers.get(_digest(row), 0), self.num_seen - 1) for row in images])
        return torch.nn.functional.one_hot(guess, self.num_seen).float()
