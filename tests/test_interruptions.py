"""A process killed in the middle of a write leaves nothing that reads as complete or valid, and
the next run redoes what was lost.

Each test runs ``fscil-bench run`` in a child process that stops for good at one chosen write
(``stop_at_write.py``: just before a finished temporary file is renamed into place) and tells
the test so through a pipe; the test then kills it with SIGKILL. The kill point is therefore
exact, whatever the machine's load.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from real_data_fixtures import write_yaml_benchmark

from fscil_bench.cache import verified
from fscil_bench.cli import main
from fscil_bench.results.store import ResultsStore, RunKey

HERE = Path(__file__).resolve().parent
PLUGIN = '''
import os
import torch
from fscil_bench import MethodBase


class Constant(MethodBase):
    """Predicts class $SHIFT (mod the classes seen) for every image: two runs can differ on purpose."""

    name = "constant"
    presets = {"quick": {}}

    def fit_base(self, session, ctx):
        self.n = session.num_seen

    def fit_session(self, session, ctx):
        self.n = session.num_seen

    def predict(self, images):
        logits = torch.zeros(len(images), self.n)
        logits[:, int(os.environ.get("SHIFT", "0")) % self.n] = 1.0
        return logits
'''


def killed_at(pattern: str, args: list[str], env: dict[str, str] | None = None) -> str:
    """Run ``fscil-bench args`` in a child stopped at the first rename onto a file matching
    ``pattern``; kill it there and return that file's path. Fails if the child ends first."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen([sys.executable, str(HERE / "stop_at_write.py"), pattern, str(write_end), *args],
                             pass_fds=(write_end,), env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_end)
    try:
        # A safety net against a hung child, not a timing window: the child signals as soon as it gets there.
        ready, _, _ = select.select([read_end], [], [], 600)
        line = os.read(read_end, 4096).decode() if ready else ""
    finally:
        os.close(read_end)
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate()
    assert line.endswith("\n"), f"the child never reached a write of {pattern}:\n{err.decode()[-3000:]}"
    return line.strip()


@pytest.fixture
def bench_yaml(tmp_path) -> Path:
    return write_yaml_benchmark(tmp_path / "bench")


def run_args(bench_yaml: Path, tmp_path: Path, *extra: str) -> list[str]:
    plugin = tmp_path / "constant.py"
    plugin.write_text(PLUGIN)
    return ["run", "-b", str(bench_yaml), "--plugin", str(plugin), "-m", "constant", "-o", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), *extra]


KEY = RunKey("squares@1", "constant", "quick", 0)


def test_a_run_killed_inside_its_record_write_is_not_complete_and_is_redone(bench_yaml, tmp_path, capsys):
    args = run_args(bench_yaml, tmp_path)
    store = ResultsStore(tmp_path / "runs")
    target = killed_at("record.json", args)
    assert Path(target) == store.run_dir(KEY) / "record.json"
    assert not Path(target).exists() and store.read(KEY) is None and not store.is_complete(KEY)
    assert list(store.records()) == []  # the report sees nothing either
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "already complete" not in out and "1 of 1 runs complete" in out
    assert store.is_complete(KEY)


@pytest.mark.parametrize("pattern", ["record.json", "predictions.npz", "predictions.npz.sha256"])
def test_a_forced_rerun_killed_midway_leaves_no_record_that_vouches_for_other_predictions(pattern, bench_yaml, tmp_path,
                                                                                          capsys):
    """Rerunning a complete run (``--force``) that now predicts otherwise, killed after the new
    predictions are on disk but before the new record is: the old record does not match them."""
    args = run_args(bench_yaml, tmp_path)
    store = ResultsStore(tmp_path / "runs")
    assert main(args) == 0 and store.is_complete(KEY)
    old_record = store.read(KEY)
    killed_at(pattern, args + ["--force"], env={"SHIFT": "1"})
    if pattern == "predictions.npz":  # killed before the new predictions replaced the old: still the old run
        assert store.is_complete(KEY) and store.read(KEY) == old_record
        return
    assert store.read(KEY) == old_record  # the old record is still there ...
    assert not store.is_complete(KEY)  # ... but its predictions are gone, so the run is not complete
    path = store.run_dir(KEY) / "record.json"
    assert store.predictions(path, old_record) is None
    capsys.readouterr()
    assert main(args) == 0  # not forced: redone because incomplete
    assert "already complete" not in capsys.readouterr().out
    assert store.is_complete(KEY)


def base_model_args(bench_yaml: Path, tmp_path: Path, output: str) -> list[str]:
    return ["run", "-b", str(bench_yaml), "-m", "prototype", "--preset", "smoke", "-o", str(tmp_path / output),
            "--cache-dir", str(tmp_path / "cache")]


def base_model_note(tmp_path: Path, output: str) -> dict:
    record = json.loads(next((tmp_path / output).glob("*/*/*/seed-*/record.json")).read_text())
    assert record["status"] == "completed"
    return record["extra"]["base_model"]


@pytest.mark.parametrize("pattern", ["*.pt", "*.pt.sha256"])
def test_a_base_model_save_killed_midway_is_never_loaded_and_the_next_run_retrains(pattern, bench_yaml, tmp_path,
                                                                                   capsys):
    """Killed with the weights written under their temporary name (``*.pt``), or in place but
    without their checksum (``*.pt.sha256``): nothing verifies, the next run trains again and
    saves a valid entry, which the run after loads."""
    target = Path(killed_at(pattern, base_model_args(bench_yaml, tmp_path, "runs1")))
    folder = tmp_path / "cache" / "base_models"
    weights = [p for p in folder.iterdir() if p.name.endswith(".pt") and not p.name.startswith(".")]
    assert not any(verified(p) for p in weights)
    assert not target.exists()
    assert target.with_suffix("").exists() == (pattern == "*.pt.sha256")  # the weights, in place but unchecked
    assert not list((tmp_path / "runs1").glob("*/*/*/seed-*/record.json"))
    assert main(base_model_args(bench_yaml, tmp_path, "runs2")) == 0
    note = base_model_note(tmp_path, "runs2")
    assert note["cache_hit"] is False
    saved = folder / f"{note['key']}.pt"
    assert verified(saved)
    if pattern == "*.pt.sha256":
        assert saved == target.with_suffix("") and "failed its checksum; retraining" in capsys.readouterr().out
    assert main(base_model_args(bench_yaml, tmp_path, "runs3")) == 0
    again = base_model_note(tmp_path, "runs3")
    assert again["cache_hit"] is True and again["key"] == note["key"]
