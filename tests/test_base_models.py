import torch

from fscil_bench.base_models import cross_entropy_base_model
from fscil_bench.protocol import Context
from fscil_bench.runner import make_session
from fscil_bench.training import SGDRecipe

RECIPE = SGDRecipe(epochs=2, lr=0.05, batch_size=16)


def make_ctx(bench, tmp_path, logs):
    return Context(device=torch.device("cpu"), seed=0, generator=torch.Generator().manual_seed(0),
                   num_classes_total=bench.schedule.num_classes, hparams=None, benchmark=bench.info(),
                   cache_dir=tmp_path, progress=lambda it, desc="", total=None: iter(it), log=logs.append)


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
