"""The runner keeps the protocol: what a method receives, when, and what happens when it fails."""

import numpy as np
import pytest
import torch

from fscil_bench import MethodBase
from fscil_bench.run.runner import make_session, run_method


class Spy(MethodBase):
    """Records everything the runner hands it; predicts class 0 for every image."""

    name = "spy"
    presets = {"quick": {}}
    calls: list = []

    def fit_base(self, session, ctx):
        Spy.calls.append(("fit_base", session, ctx))

    def fit_session(self, session, ctx):
        Spy.calls.append(("fit_session", session, ctx))

    def predict(self, *args, **kwargs):
        assert not kwargs and len(args) == 1, "predict must receive the images alone"
        (images,) = args
        Spy.calls.append(("predict", images.shape[0], self.num_seen))
        return torch.zeros(images.shape[0], self.num_seen)

    @property
    def num_seen(self):
        return [c for c in Spy.calls if c[0].startswith("fit")][-1][1].num_seen


def test_runner_hands_each_session_only_its_own_training_data(synthetic_benchmark, run_options):
    bench = synthetic_benchmark
    Spy.calls = []
    result = run_method(bench, Spy, "quick", 0, run_options)
    assert result.status == "completed"
    fits = [c for c in Spy.calls if c[0].startswith("fit")]
    assert [c[0] for c in fits] == ["fit_base"] + ["fit_session"] * (len(bench.schedule) - 1)
    test_bytes = {img.tobytes() for img in bench.test.images}
    seen_train: set[bytes] = set()
    for (_, session, ctx), spec in zip(fits, bench.schedule.sessions):
        labels = session.train.labels.numpy()
        # Only this session's classes, exactly the scheduled samples, no test image, nothing from before.
        assert set(labels.tolist()) <= set(spec.classes)
        assert np.array_equal(session.train.raw_images.numpy(), bench.train.images[spec.train_indices])
        mine = {img.tobytes() for img in session.train.raw_images.numpy()}
        assert not mine & test_bytes
        assert not mine & seen_train
        seen_train |= mine
        # The session object exposes no test data and the context no dataset at all.
        assert not any("test" in name for name in vars(session))
        assert not any(isinstance(v, np.ndarray) and len(v) == len(bench.test.labels) for v in vars(ctx).values())
        if spec.shots is not None:
            assert np.bincount(labels - spec.classes[0]).tolist() == [spec.shots] * spec.ways
    # Evaluation covers exactly the test images of the seen classes after every session.
    for t in range(len(bench.schedule)):
        n_seen = bench.schedule.num_seen(t)
        assert len(result.predictions[t]) == int((bench.test.labels < n_seen).sum())
    assert result.metrics["session_acc"][0] == pytest.approx(1 / bench.schedule.num_seen(0))


def test_session_train_set_is_a_copy(synthetic_benchmark):
    session = make_session(synthetic_benchmark, 1)
    session.train.raw_images[:] = 0
    assert synthetic_benchmark.train.images.max() > 0


class Crashes(Spy):
    name = "crashes"

    def fit_session(self, session, ctx):
        if session.index == 2:
            raise RuntimeError("boom in session two")
        super().fit_session(session, ctx)


def test_a_crash_is_recorded_with_its_session_and_traceback(synthetic_benchmark, run_options):
    result = run_method(synthetic_benchmark, Crashes, "quick", 0, run_options)
    assert result.status == "failed"
    assert result.error["session"] == 2
    assert result.error["message"] == "boom in session two"
    assert "Traceback" in result.error["traceback"] and "fit_session" in result.error["traceback"]
    assert result.sessions_done == 2 and result.metrics is None


class WrongShape(Spy):
    name = "wrong-shape"

    def predict(self, images):
        return torch.zeros(images.shape[0], 3)


def test_logits_of_the_wrong_shape_fail_the_run_with_a_clear_message(synthetic_benchmark, run_options):
    result = run_method(synthetic_benchmark, WrongShape, "quick", 0, run_options)
    assert result.status == "failed"
    assert result.error["type"] == "ProtocolError"
    assert "expected logits of shape" in result.error["message"] and ", 4)" in result.error["message"]


def test_unknown_preset_fails_the_run_naming_the_choices(synthetic_benchmark, run_options):
    result = run_method(synthetic_benchmark, Spy, "paper", 0, run_options)
    assert result.status == "failed"
    assert "no preset 'paper'; choose from quick" in result.error["message"]
