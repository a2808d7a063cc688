"""The generic registry, method discovery (a new file is a new method) and the smoke presets."""

from __future__ import annotations

import sys

import fscil_bench.baselines
import pytest

from fscil_bench.registry import Registry, RegistryError, UnknownName
from fscil_bench.run.methods import PluginError, discover


def test_lazy_entries_are_imported_on_first_lookup_only():
    reg: Registry = Registry("thing")
    reg.add("pi", "math:pi")
    reg.add("tau", "fscil_bench_nonexistent_module:tau")  # never looked up, never imported
    assert reg.names() == ["pi", "tau"] and "tau" in reg
    assert reg.get("pi") == pytest.approx(3.14159, abs=1e-5)
    assert "fscil_bench_nonexistent_module" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        reg.get("tau")


def test_unknown_names_suggest_the_closest_and_clashes_are_refused():
    reg: Registry = Registry("colour")
    reg.add("red", (255, 0, 0))
    reg.add("green", (0, 255, 0))
    with pytest.raises(UnknownName, match=r"unknown colour 'rde' \(did you mean 'red'\?\); available: green, red"):
        reg.get("rde")
    with pytest.raises(UnknownName, match=r"unknown colour 'blue'; available"):  # nothing close: no suggestion
        reg.get("blue")
    with pytest.raises(RegistryError, match="already taken"):
        reg.add("red", (250, 0, 0))
    reg.add("red", (250, 0, 0), replace=True)
    assert reg.get("red") == (250, 0, 0)
    broken: Registry = Registry("x")
    broken.add("bad", "not-a-reference:")
    with pytest.raises(RegistryError, match="'module:attribute'"):
        broken.get("bad")


def test_a_method_unknown_to_the_registry_gets_a_suggestion():
    registry = discover()
    with pytest.raises(PluginError, match=r"unknown method 'protoype' \(did you mean 'prototype'\?\)"):
        registry.get("protoype")


def test_a_new_file_among_the_built_in_methods_is_a_new_method(tmp_path, monkeypatch):
    """Adding a method is one file: no entry point, no registration call."""
    (tmp_path / "constant_guess.py").write_text(
        "import torch\n"
        "from fscil_bench import MethodBase\n\n"
        "class ConstantGuess(MethodBase):\n"
        "    name = 'constant-guess'\n"
        "    presets = {'quick': {}, 'smoke': {}}\n"
        "    def fit_base(self, session, ctx): self.seen = session.num_seen\n"
        "    def fit_session(self, session, ctx): self.seen = session.num_seen\n"
        "    def predict(self, images): return torch.zeros(len(images), self.seen)\n")
    monkeypatch.setattr(fscil_bench.baselines, "__path__", [*fscil_bench.baselines.__path__, str(tmp_path)])
    registry = discover()
    assert "constant-guess" in registry.names()
    assert registry.source("constant-guess") == "fscil_bench.baselines.constant_guess"
    sys.modules.pop("fscil_bench.baselines.constant_guess", None)


def test_a_broken_built_in_module_is_reported_and_the_others_still_load(tmp_path, monkeypatch):
    (tmp_path / "broken_method.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.setattr(fscil_bench.baselines, "__path__", [*fscil_bench.baselines.__path__, str(tmp_path)])
    registry = discover()
    assert "prototype" in registry.names()
    assert "RuntimeError: boom" in registry.errors["fscil_bench.baselines.broken_method"]


def test_every_registered_method_has_quick_paper_and_smoke_presets():
    registry = discover()
    assert not registry.errors, registry.errors
    for name in registry.names():
        presets = registry.get(name).presets
        assert {"quick", "paper", "smoke"} <= set(presets), f"{name} has presets {sorted(presets)}"
