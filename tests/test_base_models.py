import threading

import torch
from torch import nn

from fscil_bench.protocol import BenchmarkInfo, Context
from fscil_bench.run.runner import make_session
from fscil_bench.toolkit.base_models import cached_model, cross_entropy_base_model
from fscil_bench.toolkit.training import SGDRecipe

RECIPE = SGDRecipe(epochs=2, lr=0.05, batch_size=16)


def make_ctx(bench, tmp_path, logs):
    return Context.create(bench.info(), None, 0, cache_dir=tmp_path, log=logs.append)


def test_a_shared_recipe_trains_once_and_loads_after(synthetic_benchmark, tmp_path):
    session = make_session(synthetic_benchmark, 0)
    logs: list[str] = []
    ctx1 = make_ctx(synthetic_benchmark, tmp_path, logs)
    first = cross_entropy_base_model(session, ctx1, "convnet4-small", RECIPE)
    assert ctx1.extra["base_model"]["cache_hit"] is False
    ctx2 = make_ctx(synthetic_benchmark, tmp_path, logs)
    second = cross_entropy_base_model(session, ctx2, "convnet4-small", RECIPE)
    assert ctx2.extra["base_model"]["cache_hit"] is True
    assert ctx1.extra["base_model"]["key"] == ctx2.extra["base_model"]["key"]
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    # A different recipe is a different model.
    ctx3 = make_ctx(synthetic_benchmark, tmp_path, logs)
    cross_entropy_base_model(session, ctx3, "convnet4-small", SGDRecipe(epochs=1, lr=0.05, batch_size=16))
    assert ctx3.extra["base_model"]["key"] != ctx1.extra["base_model"]["key"]


def test_a_corrupted_base_model_is_detected_and_retrained(synthetic_benchmark, tmp_path):
    session = make_session(synthetic_benchmark, 0)
    logs: list[str] = []
    ctx = make_ctx(synthetic_benchmark, tmp_path, logs)
    cross_entropy_base_model(session, ctx, "convnet4-small", RECIPE)
    path = tmp_path / "base_models" / f"{ctx.extra['base_model']['key']}.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    ctx2 = make_ctx(synthetic_benchmark, tmp_path, logs)
    cross_entropy_base_model(session, ctx2, "convnet4-small", RECIPE)
    assert ctx2.extra["base_model"]["cache_hit"] is False
    assert any("failed its checksum; retraining" in line for line in logs)


def test_a_base_model_being_trained_elsewhere_is_waited_for_then_loaded(synthetic_benchmark, tmp_path):
    # Two threads stand for two worker processes: the advisory lock is per open file, so they
    # exclude each other just as processes do.
    trained_by: list[str] = []
    cache_hits: dict[str, bool] = {}
    logs: list[str] = []
    first_training, may_finish = threading.Event(), threading.Event()

    def train(name: str):
        def run(model: nn.Module) -> None:
            trained_by.append(name)
            first_training.set()
            assert may_finish.wait(60)
        return run

    def worker(name: str) -> None:
        ctx = make_ctx(synthetic_benchmark, tmp_path, logs)
        cached_model(ctx, {"kind": "toy"}, lambda: nn.Linear(3, 2), train(name))
        cache_hits[name] = ctx.extra["base_model"]["cache_hit"]

    first = threading.Thread(target=worker, args=("first",))
    first.start()
    assert first_training.wait(60)
    second = threading.Thread(target=worker, args=("second",))
    second.start()
    second.join(1.0)
    assert second.is_alive(), "the second worker did not wait for the first"
    may_finish.set()
    first.join(60)
    second.join(60)
    assert trained_by == ["first"]
    assert cache_hits == {"first": False, "second": True}
    assert any(line.startswith("waiting for another process that holds") for line in logs)


def test_training_on_features_follows_the_recipe_and_fits_a_separable_toy(tmp_path):
    from fscil_bench.toolkit.training import train_on_features

    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    features = torch.randn(100, 8) * 0.3 + torch.eye(4, 8)[labels] * 3  # four separable clusters
    layer = torch.nn.Linear(8, 4)
    ctx = Context.create(BenchmarkInfo("toy", 1, "toy", 4, 1, 4, 1), None, 0, cache_dir=tmp_path, log=lambda m: None)
    batch_sizes = []

    def loss(f, y):
        batch_sizes.append(len(f))
        return torch.nn.functional.cross_entropy(layer(f), y)

    recipe = SGDRecipe(epochs=5, lr=0.1, batch_size=32, warmup_epochs=0.0, schedule="constant")
    history = train_on_features([layer], features, labels, loss, recipe, ctx, desc="toy")
    assert len(history) == 5 and history[-1] < history[0] / 2
    assert batch_sizes == [32] * (3 * 5)  # drop_last: 100 rows give 3 full batches per epoch
    assert (layer(features).argmax(1) == labels).float().mean() == 1.0
    assert not layer.training
