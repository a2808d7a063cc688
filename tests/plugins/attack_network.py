"""Attack: reach out over the network, to a loopback port (``ATTACK_PORT``) where a helper
would answer with the test labels. The outcome is noted in ``ctx.extra["connect"]``. It
predicts class 0."""

import os
import socket

import torch

from fscil_bench import MethodBase


class Caller(MethodBase):
    name = "attack-network"
    presets = {"quick": {}, "smoke": {}}

    def fit_base(self, session, ctx):
        try:
            with socket.create_connection(("127.0.0.1", int(os.environ["ATTACK_PORT"])), timeout=5) as conn:
                conn.sendall(b"labels, please\n")
                ctx.extra["connect"] = "connected"
        except OSError as exc:
            ctx.extra["connect"] = f"failed: {type(exc).__name__}"
        self.fit_session(session, ctx)

    def fit_session(self, session, ctx):
        self.num_seen = session.num_seen

    def predict(self, images):
        return torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.long), self.num_seen).float()
