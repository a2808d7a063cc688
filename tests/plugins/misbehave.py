"""Methods that take their worker down in session 1: a hang, a segfault, an ``os._exit``, and
an allocation without end. Each learns nothing and predicts class 0 until then."""

import ctypes
import os
import time

import torch

from fscil_bench import MethodBase


class Quiet(MethodBase):
    presets = {"quick": {}, "smoke": {}}

    def fit_base(self, session, ctx):
        self.num_seen = session.num_seen

    def fit_session(self, session, ctx):
        self.num_seen = session.num_seen
        if session.index == 1:
            self.misbehave()

    def predict(self, images):
        return torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.long), self.num_seen).float()


class Hangs(Quiet):
    name = "hang-fit"

    def misbehave(self):
        time.sleep(3600)


class Segfaults(Quiet):
    name = "segfault"

    def misbehave(self):
        ctypes.string_at(0)


class Exits(Quiet):
    name = "exits"

    def misbehave(self):
        os._exit(3)


class Hog(Quiet):
    name = "hog"

    def misbehave(self):
        hoard = []
        while True:
            hoard.append(bytearray(64 << 20))
