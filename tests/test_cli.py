"""The command line, end to end on the tiny built-in benchmark."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from fscil_bench.cli import main
from fscil_bench.run.methods import discover

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = REPO / "examples" / "nearest_mean_pixels.py"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("FSCIL_BENCH_CACHE", str(path))
    return path


def run_cli(*args: str) -> tuple[int, str]:
    return main(list(args)), ""


def test_unknown_benchmark_lists_the_valid_ones(tmp_path, cache, capsys):
    assert main(["run", "--benchmark", "nope", "--output", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: unknown benchmark 'nope'; available: ") and "glyphs100" in err[0]


def test_unknown_method_lists_the_valid_ones(tmp_path, cache, capsys):
    assert main(["run", "--methods", "nope", "--output", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method 'nope'; available: " in err[0] and "finetune" in err[0] and "prototype" in err[0]


def test_unwritable_output_folder_is_one_line(tmp_path, cache, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--benchmark", "glyphs100-tiny", "--output", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write results to {blocker}/runs")


def test_example_plugin_runs_through_the_cli_beside_a_broken_one(tmp_path, cache, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import does_not_exist_anywhere\n")
    runs = tmp_path / "runs"
    code = main(["run", "--benchmark", "glyphs100-tiny", "--plugin", str(EXAMPLE_PLUGIN), "--plugin", str(broken),
                 "--methods", "nearest-mean-pixels", "--output", str(runs)])
    out, err = capsys.readouterr()
    assert code == 1  # the broken plugin is an error, but it did not stop the others
    assert f"error: plugin file {broken} failed to import: ModuleNotFoundError" in err
    assert "Traceback" not in err
    record = json.loads((runs / "glyphs100-tiny@1" / "nearest-mean-pixels" / "quick" / "seed-0" / "record.json").read_text())
    assert record["status"] == "completed"
    assert len(record["metrics"]["session_acc"]) == 9
    assert record["memory"]["feature_vectors"] == 100
    assert record["method"]["source"].startswith("plugin ")
    # Above chance (1/60 on the base session; 10 test images per class), far from perfect.
    assert 2 / 60 < record["metrics"]["session_acc"][0] < 0.5


@pytest.mark.slow
def test_default_methods_full_flow_with_resume(tmp_path, cache, capsys):
    """Every registered method through run, resume and report, on their smoke presets (the quick
    presets' full run is the README's second command, minutes of CPU per method)."""
    runs = tmp_path / "runs"
    args = ["run", "--benchmark", "glyphs100-tiny", "--preset", "smoke", "--output", str(runs)]
    assert main(args) == 0
    out = capsys.readouterr().out
    n = len(discover().names())
    assert f"{n} of {n} runs complete" in out
    assert main(args) == 0
    assert out.count("skipped") == 0 and capsys.readouterr().out.count("already complete, skipped") == n
    assert main(["report", "--runs", str(runs), "--output", str(tmp_path / "lb")]) == 0
    md = (tmp_path / "lb" / "glyphs100-tiny-v1.md").read_text()
    assert "| finetune" in md and "| prototype" in md


def test_a_users_runs_and_reports_leave_the_checkout_untouched(tmp_path, cache, monkeypatch):
    """The README's first command with its default folders (./runs, then ./reports), in a checkout
    holding the committed leaderboards/, leaves `git status` clean (one quick method on the tiny
    benchmark stands in for its three)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / ".gitignore", checkout)
    shutil.copytree(REPO / "leaderboards", checkout / "leaderboards")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout"]):
        subprocess.run(git + args, cwd=checkout, check=True, capture_output=True)
    monkeypatch.chdir(checkout)
    assert main(["run", "--benchmark", "glyphs100-tiny", "--plugin", str(EXAMPLE_PLUGIN), "--methods", "nearest-mean-pixels"]) == 0
    assert main(["report"]) == 0
    assert (checkout / "runs").is_dir() and (checkout / "reports" / "glyphs100-tiny-v1.md").is_file()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=checkout,
                            capture_output=True, text=True, check=True)
    assert status.stdout == ""


def test_console_script_is_installed_and_lists_methods(tmp_path, cache):
    exe = Path(sys.executable).parent / "fscil-bench"
    out = subprocess.run([str(exe), "list"], capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "glyphs100@1" in out.stdout and "finetune" in out.stdout and "prototype" in out.stdout


INTERRUPT_PLUGIN = '''
import os, threading
from pathlib import Path
import torch
from fscil_bench import MethodBase


class Fast(MethodBase):
    name = "fast"
    presets = {"quick": {}}

    def fit_base(self, session, ctx):
        self.n = session.num_seen

    def fit_session(self, session, ctx):
        self.n = session.num_seen

    def predict(self, images):
        return torch.zeros(len(images), self.n)


class Slow(Fast):
    """With $HOLD_FILE set: creates that file on starting, then never finishes (until killed)."""

    name = "slow"

    def fit_base(self, session, ctx):
        if os.environ.get("HOLD_FILE"):
            Path(os.environ["HOLD_FILE"]).touch()
            threading.Event().wait()
        super().fit_base(session, ctx)
'''


def test_killing_a_run_loses_nothing_that_finished(tmp_path, cache):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(INTERRUPT_PLUGIN)
    runs = tmp_path / "runs"
    exe = str(Path(sys.executable).parent / "fscil-bench")
    # The method writes the file the test waits for, so it runs in a worker without the sandbox.
    cmd = [exe, "run", "--benchmark", "glyphs100-tiny", "--plugin", str(plugin), "--methods", "fast,slow",
           "--seeds", "0", "1", "--output", str(runs), "--isolation", "process"]
    held = tmp_path / "slow-started"
    proc = subprocess.Popen(cmd, env={**os.environ, "HOLD_FILE": str(held)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # The runs go in order (fast 0, fast 1, slow 0): once slow has started, both fast runs are done.
        wait_until(held.exists, "the slow method started", proc)
    finally:
        proc.kill()
        proc.wait()
    done = runs / "glyphs100-tiny@1" / "fast" / "quick"
    first = {p: p.read_text() for p in done.glob("seed-*/record.json")}
    assert len(first) == 2
    assert not list((runs / "glyphs100-tiny@1").glob("slow/*/*/record.json"))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("already complete, skipped") == 2
    assert {p: p.read_text() for p in done.glob("seed-*/record.json")} == first  # untouched
    assert len(list((runs / "glyphs100-tiny@1").glob("slow/*/*/record.json"))) == 2
    forced = subprocess.run([exe, "run", "--benchmark", "glyphs100-tiny", "--plugin", str(plugin), "--methods", "fast",
                             "--force", "--output", str(runs)], capture_output=True, text=True, timeout=300)
    assert forced.returncode == 0 and "skipped" not in forced.stdout
