"""The Avalanche and learn2learn integrations: one module each, the core runs without them, the
export to Avalanche keeps the FSCIL splits, and Avalanche's metrics agree with ours where their
definitions agree.

Where the definitions differ (documented in ``fscil_bench/integrations/avalanche_adapter.py``):

* Avalanche's stream accuracy is sample-weighted over the evaluated stream, like our ``A_t``; the
  unweighted mean of its per-experience accuracies is a different number.
* Avalanche's forgetting is initial-based (accuracy when the experience was trained minus the
  current one), like our ``forgetting_initial``; our headline ``forgetting_max`` is max-based and
  larger whenever a group's accuracy rose after it was learned.
* Avalanche reports forgetting 0 after the first experience; ours is undefined (``None``) there.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_synthetic_benchmark

from fscil_bench.metrics.descriptors import summarize
from fscil_bench.metrics.fscil import (
    accuracy_matrix,
    forgetting_initial,
    forgetting_max,
    session_accuracies,
)
from fscil_bench.run.runner import RunOptions, run_method

REPO = Path(__file__).resolve().parent.parent


# --- one module per library; the core without either ---------------------------------------------


def _importers(library: str) -> set[str]:
    """Files of the package (fscil_bench/ and baselines/) with an import statement of ``library``."""
    found = set()
    for path in [*REPO.joinpath("fscil_bench").rglob("*.py"), *REPO.joinpath("baselines").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == library or n.startswith(library + ".") for n in names):
                found.add(path.relative_to(REPO).as_posix())
    return found


def test_each_library_is_imported_by_exactly_one_adapter_module():
    assert _importers("avalanche") == {"fscil_bench/integrations/avalanche_adapter.py"}
    assert _importers("learn2learn") == {"fscil_bench/integrations/learn2learn_tasks.py"}
    assert _importers("timm") == {"fscil_bench/integrations/timm_backbones.py"}
    assert _importers("open_clip") == {"fscil_bench/integrations/open_clip_backbones.py"}


CORE_WITHOUT_LIBRARIES = """
import importlib.abc, sys
from pathlib import Path

BLOCKED = ("avalanche", "learn2learn", "timm", "open_clip")


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, Block())
sys.path.insert(0, TESTS)

import fscil_bench, fscil_bench.cli, fscil_bench.metrics, fscil_bench.reporting.report
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import RunOptions, run_method
from conftest import make_synthetic_benchmark

registry = discover()  # loads every entry point, the Avalanche and CEC methods included
assert not registry.errors, registry.errors
for name in ("joint", "icarl", "cec", "avalanche-naive", "avalanche-lwf", "avalanche-ewc", "avalanche-replay"):
    assert name in registry.methods, name
bench = make_synthetic_benchmark()
options = RunOptions(cache_dir=Path(CACHE), log=lambda msg: None, isolation="none")
result = run_method(bench, registry.get("prototype"), "quick", 0, options)
assert result.status == "completed", result.error
for name in ("avalanche-naive", "cec"):
    failed = run_method(bench, registry.get(name), "quick", 0, options)
    assert failed.status == "failed" and failed.error["type"] == "ImportError", failed.error
    assert "pip install" in failed.error["message"] or "install" in failed.error["message"], failed.error["message"]
# The frozen-feature methods run without timm and open_clip on the base model; with library
# weights they fail with the line saying what to install.
assert run_method(bench, registry.get("simplecil"), "quick", 0, options).status == "completed"
import dataclasses
weights = Path(CACHE) / "vit.pth"
weights.write_bytes(b"not read")
hp = dataclasses.replace(registry.get("simplecil").presets["quick"], pretrained=str(weights), backbone="timm:vit_tiny_patch16_224")
on_timm = type("OnTimm", (registry.get("simplecil"),), {"presets": {"quick": hp}})
failed = run_method(bench, on_timm, "quick", 0, options)
assert failed.status == "failed" and failed.error["type"] == "ImportError", failed.error
assert "pip install 'fscil-bench[pretrained]'" in failed.error["message"], failed.error["message"]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("core ok", round(result.metrics["last"], 3))
"""


def test_core_imports_and_runs_without_avalanche_learn2learn_timm_or_open_clip(tmp_path):
    script = CORE_WITHOUT_LIBRARIES.replace("TESTS", repr(str(REPO / "tests"))).replace("CACHE", repr(str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "core ok" in out.stdout


# --- fscil-bench benchmarks as Avalanche benchmarks ----------------------------------------------


def test_export_keeps_the_fscil_splits(synthetic_benchmark):
    from fscil_bench.integrations.avalanche_adapter import to_avalanche_benchmark

    bench = synthetic_benchmark
    scenario = to_avalanche_benchmark(bench)
    cumulative = to_avalanche_benchmark(bench, cumulative_test=True)
    sessions = bench.schedule.sessions
    assert len(scenario.train_stream) == len(scenario.test_stream) == len(sessions)
    for t, (train, test, spec) in enumerate(zip(scenario.train_stream, scenario.test_stream, sessions)):
        assert train.current_experience == test.current_experience == t
        # Train experience t: exactly the samples session t hands a method.
        assert list(train.dataset.targets) == bench.train.labels[spec.train_indices].tolist()
        assert set(train.classes_in_this_experience) == set(spec.classes)
        assert set(train.previous_classes) == set(range(spec.classes[0]))
        # Test experience t: the test images of session t's classes; cumulative: of every seen class.
        start, stop = bench.schedule.class_groups()[t]
        assert sorted(test.dataset.targets) == sorted(l for l in bench.test.labels.tolist() if start <= l < stop)
        assert len(cumulative.test_stream[t].dataset) == int((bench.test.labels < stop).sum())
        assert set(test.dataset.targets_task_labels) == {0}
    # Images come out through the benchmark's own transforms: eval group = test-time view.
    first_test = scenario.test_stream[0].dataset
    x, y, task = first_test[0]
    index = int(np.flatnonzero(bench.test.labels < bench.schedule.class_groups()[0][1])[0])
    expected = bench.eval_transform(torch.from_numpy(bench.test.images[index : index + 1]), None)[0]
    assert torch.allclose(x, expected) and int(y) == bench.test.labels[index] and task == 0
    base = scenario.train_stream[0].dataset
    first_train = int(sessions[0].train_indices[0])
    expected = bench.eval_transform(torch.from_numpy(bench.train.images[first_train : first_train + 1]), None)[0]
    assert torch.allclose(base.eval()[0][0], expected)
    assert base.train()[0][0].shape == expected.shape  # the train group augments (crop + flip)


# --- Avalanche's metrics against ours ----------------------------------------------------------------


def _metric(values: dict, prefix: str) -> float:
    (value,) = [v for k, v in values.items() if k.startswith(prefix)]
    return float(value)


def test_avalanche_evaluation_agrees_with_our_metrics_on_the_same_model(tmp_path):
    """A wrapped Avalanche strategy is evaluated by Avalanche's own EvaluationPlugin (stream and
    experience accuracy, experience and stream forgetting) on the exported test stream after every
    session, and by our runner on the same model; the numbers must agree where the definitions do."""
    from fscil_bench.baselines.avalanche_methods import AvalancheNaive
    from test_baselines import tiny

    from fscil_bench.integrations.avalanche_adapter import (
        avalanche,
        quiet,
        to_avalanche_benchmark,
    )

    bench = make_synthetic_benchmark()
    scenario = to_avalanche_benchmark(bench)
    avalanche_results: list[dict] = []

    class Probe(tiny(AvalancheNaive, epochs=3)):
        def make_evaluator(self):
            from avalanche.evaluation.metrics import (
                accuracy_metrics,
                forgetting_metrics,
            )

            with quiet():
                return avalanche().EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                                    forgetting_metrics(experience=True, stream=True), loggers=[])

        def fit_base(self, session, ctx):
            super().fit_base(session, ctx)
            self._avalanche_eval(session)

        def fit_session(self, session, ctx):
            super().fit_session(session, ctx)
            self._avalanche_eval(session)

        def _avalanche_eval(self, session):
            with quiet():
                avalanche_results.append(self.avalanche_strategy.eval(scenario.test_stream[: session.index + 1]))

    result = run_method(bench, Probe, "tiny", 0, RunOptions(cache_dir=tmp_path, log=lambda msg: None, isolation="none"))
    assert result.status == "completed", result.error and result.error["traceback"]
    ours = result.metrics
    A = np.array([[np.nan if v is None else v for v in row] for row in ours["acc_matrix"]])
    for t, values in enumerate(avalanche_results):
        # Stream accuracy = our sample-weighted A_t; experience accuracy = our A[t][g].
        assert _metric(values, "Top1_Acc_Stream/eval_phase/test_stream") == pytest.approx(ours["session_acc"][t], abs=1e-12)
        for g in range(t + 1):
            assert _metric(values, f"Top1_Acc_Exp/eval_phase/test_stream/Exp{g:03d}") == pytest.approx(A[t, g], abs=1e-12)
        # Forgetting: Avalanche's is initial-based, A[g][g] - A[t][g] per experience, averaged over g < t.
        for g in range(t):
            assert _metric(values, f"ExperienceForgetting/eval_phase/test_stream/Exp{g:03d}") == pytest.approx(A[g, g] - A[t, g], abs=1e-12)
        stream_forgetting = _metric(values, "StreamForgetting/eval_phase/test_stream")
        if t == 0:
            assert stream_forgetting == 0.0 and ours["forgetting_initial_per_session"][0] is None  # ours: undefined
        else:
            assert stream_forgetting == pytest.approx(ours["forgetting_initial_per_session"][t], abs=1e-12)
            assert ours["forgetting_max_per_session"][t] >= ours["forgetting_initial_per_session"][t] - 1e-12


def _predictions_for(matrix: list[list[float]], group_sizes: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-session labels and predictions whose accuracy on group g after session t is matrix[t][g]."""
    starts = np.cumsum([0] + [1] * len(group_sizes))  # one class per group: class g = group g
    labels, preds = [], []
    for t, row in enumerate(matrix):
        y, p = [], []
        for g in range(t + 1):
            n = group_sizes[g]
            right = round(row[g] * n)
            y += [starts[g]] * n
            p += [starts[g]] * right + [99] * (n - right)  # 99: some wrong class
        labels.append(np.array(y))
        preds.append(np.array(p))
    return labels, preds


def test_avalanche_standalone_and_functional_metrics_on_the_same_predictions():
    from fscil_bench.integrations.avalanche_adapter import avalanche, quiet

    avalanche()  # imports Avalanche quietly
    with quiet():
        from avalanche.evaluation.functional import forgetting as avalanche_forgetting
        from avalanche.evaluation.metrics import Accuracy, Forgetting

    # A base group of 60 samples and two novel groups of 10: base accuracy rises after it was
    # learned (0.8 -> 0.9), then everything drops.
    target = [[0.8], [0.9, 0.5], [0.7, 0.4, 0.6]]
    sizes = [60, 10, 10]
    labels, preds = _predictions_for(target, sizes)
    groups = [(0, 1), (1, 2), (2, 3)]
    A = accuracy_matrix(labels, preds, groups)
    assert np.allclose(np.nan_to_num(A), np.array([[0.8, 0, 0], [0.9, 0.5, 0], [0.7, 0.4, 0.6]]))

    # Accuracy: Avalanche's standalone Accuracy over all of a session's predictions is our A_t
    # (sample-weighted); the unweighted mean of the per-group accuracies is not.
    ours = session_accuracies(labels, preds)
    for t in range(3):
        acc = Accuracy()
        acc.update(torch.as_tensor(preds[t]), torch.as_tensor(labels[t]))
        assert acc.result() == pytest.approx(ours[t])
    assert ours[2] == pytest.approx((42 + 4 + 6) / 80)
    assert np.mean(A[2]) != pytest.approx(ours[2])

    # Forgetting: Avalanche's functional forgetting and its standalone Forgetting metric are
    # initial-based: row T, averaged over g < T, is our forgetting_initial ...
    F_av = avalanche_forgetting(np.nan_to_num(A))
    assert F_av[2, :2] == pytest.approx([0.8 - 0.7, 0.5 - 0.4])
    assert np.mean(F_av[2, :2]) == pytest.approx(forgetting_initial(A))
    standalone = Forgetting()
    for g in range(2):
        standalone.update(g, A[g, g], initial=True)
        standalone.update(g, A[2, g])
    assert np.mean(list(standalone.result().values())) == pytest.approx(forgetting_initial(A))
    # ... while our max-based forgetting measures the base group from its best (0.9), not its first (0.8).
    assert forgetting_max(A) == pytest.approx(((0.9 - 0.7) + (0.5 - 0.4)) / 2)
    assert forgetting_max(A) > forgetting_initial(A)
    summary = summarize(labels, preds, groups)
    assert summary["forgetting_initial"] == pytest.approx(forgetting_initial(A))
    assert summary["bwt"] == pytest.approx(-forgetting_initial(A))
    assert not math.isclose(summary["forgetting_max"], summary["forgetting_initial"])


# --- the example script -----------------------------------------------------------------------------


def test_avalanche_export_example_trains_a_strategy_on_an_exported_schedule(synthetic_benchmark):
    spec = importlib.util.spec_from_file_location("avalanche_export_example", REPO / "examples" / "avalanche_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines: list[str] = []
    accuracies = module.main(synthetic_benchmark, epochs=1, base_epochs=2, log=lines.append)
    assert len(accuracies) == len(synthetic_benchmark.schedule)
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert "as an Avalanche benchmark: 4 train / 4 test experiences" in lines[0]
    assert sum(line.startswith("after experience") for line in lines) == 4
