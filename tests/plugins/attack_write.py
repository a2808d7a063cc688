"""Attack: write outside the worker's scratch folder.

It tries to create a file in each folder of ``ATTACK_TARGETS`` (the results folder, the cache
root, ...; an attacker would guess them), to overwrite every ``record.json`` under
``ATTACK_RESULTS``, and writes one file into its scratch folder (``$TMPDIR``), which it may.
Outcomes are noted in ``ctx.extra["writes"]``. It predicts class 0.
"""

import os
from pathlib import Path

import torch

from fscil_bench import MethodBase


def _try(writes, path, write):
    try:
        write(path)
        writes[str(path)] = "written"
    except Exception as exc:  # noqa: BLE001 - the attack notes every refusal
        writes[str(path)] = f"denied: {type(exc).__name__}"


class Vandal(MethodBase):
    name = "attack-write"
    presets = {"quick": {}, "smoke": {}}

    def fit_base(self, session, ctx):
        writes = {}
        for folder in filter(None, os.environ.get("ATTACK_TARGETS", "").split(os.pathsep)):
            _try(writes, Path(folder) / "vandal.txt", lambda p: p.write_text("was here"))
        results = Path(os.environ.get("ATTACK_RESULTS", "/nonexistent"))
        for record in sorted(results.rglob("record.json")) if results.is_dir() else []:
            _try(writes, record, lambda p: p.write_text("{}"))
        _try(writes, Path(os.environ["TMPDIR"]) / "scratch.txt", lambda p: p.write_text("mine"))
        ctx.extra["writes"] = writes
        self.fit_session(session, ctx)

    def fit_session(self, session, ctx):
        self.num_seen = session.num_seen

    def predict(self, images):
        return torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.long), self.num_seen).float()
