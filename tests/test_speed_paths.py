"""The device fast paths (bf16 autocast, channels-last, pinned memory, no per-step host reads),
checked for correctness on the CPU, and the speed harness's figures on a tiny benchmark."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_synthetic_benchmark
from torch import nn

from fscil_bench.data.arrays import iterate_images
from fscil_bench.models.backbones import ConvNet
from fscil_bench.protocol import Context
from fscil_bench.run.runner import make_session
from fscil_bench.toolkit.features import extract_features
from fscil_bench.toolkit.heads import BackboneWithHead
from fscil_bench.toolkit.training import DevicePaths, SGDRecipe, train_supervised

RECIPE = SGDRecipe(epochs=10, lr=0.05, batch_size=16)


def context(bench, tmp_path: Path) -> Context:
    return Context.create(bench.info(), None, 0, cache_dir=tmp_path, log=lambda m: None)


def tiny_model(num_classes: int) -> BackboneWithHead:
    torch.manual_seed(0)
    return BackboneWithHead(ConvNet((8, 16, 16, 16)), num_classes)


def train_accuracy(model: nn.Module, data, ctx: Context) -> float:
    logits, labels = extract_features(model, data, ctx)
    return float((logits.argmax(1) == labels).float().mean())


def test_default_paths_are_on_for_cuda_only_and_bf16_is_the_runs_opt_in():
    assert DevicePaths().resolve("cpu") == DevicePaths(bf16=False, channels_last=False, pin_memory=False)
    assert DevicePaths().resolve("cuda") == DevicePaths(bf16=False, channels_last=True, pin_memory=True)
    assert DevicePaths().resolve("cuda", bf16=True).bf16 is True
    assert DevicePaths(bf16=False).resolve("cuda", bf16=True).bf16 is False
    assert DevicePaths(bf16=True).resolve("cpu").bf16 is True


def test_bf16_autocast_trains_to_the_same_accuracy_on_cpu(tmp_path):
    bench = make_synthetic_benchmark(train_per_class=16)
    data = make_session(bench, 0).train
    accuracy, dtypes = {}, {}
    for bf16 in (False, True):
        ctx = context(bench, tmp_path)
        model = tiny_model(bench.schedule.num_base_classes)
        seen: list[torch.dtype] = []
        hook = model.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        train_supervised(model, data, F.cross_entropy, RECIPE, ctx, "t", paths=DevicePaths(bf16=bf16))
        hook.remove()
        accuracy[bf16], dtypes[bf16] = train_accuracy(model, data, ctx), set(seen)
        assert ("training_precision" in ctx.extra) is bf16
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    assert dtypes == {False: {torch.float32}, True: {torch.bfloat16}}
    assert accuracy[False] > 0.5, accuracy  # 4 classes: chance is 0.25
    assert abs(accuracy[True] - accuracy[False]) <= 0.15, accuracy


def test_channels_last_gives_the_same_outputs_and_training(tmp_path):
    bench = make_synthetic_benchmark()
    data = make_session(bench, 0).train
    model = tiny_model(bench.schedule.num_base_classes).eval()
    x = torch.randn(5, 3, 16, 16)
    contiguous = model(x)
    fast = tiny_model(bench.schedule.num_base_classes).to(memory_format=torch.channels_last).eval()
    assert torch.allclose(fast(x.contiguous(memory_format=torch.channels_last)), contiguous, atol=1e-5)

    trained = {}
    for channels_last in (False, True):
        model = tiny_model(bench.schedule.num_base_classes)
        ctx = context(bench, tmp_path)
        losses = train_supervised(model, data, F.cross_entropy, RECIPE, ctx, "t",
                                  paths=DevicePaths(channels_last=channels_last), generator=torch.Generator().manual_seed(3))
        trained[channels_last] = (losses, model)
    conv = trained[True][1].backbone.features[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert trained[True][0] == pytest.approx(trained[False][0], rel=1e-3, abs=1e-4)
    for a, b in zip(trained[True][1].parameters(), trained[False][1].parameters()):
        assert torch.allclose(a, b, atol=1e-3)


def test_pinned_copies_give_identical_batches(monkeypatch):
    bench = make_synthetic_benchmark()
    data = make_session(bench, 0).train
    pinned = []

    def fake_pin(self):  # a CPU-only build cannot pin: record the call, return a copy
        pinned.append(self.shape)
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    plain = list(data.batches(10, augment=True, shuffle=True, generator=torch.Generator().manual_seed(1), pin_memory=False))
    assert not pinned
    staged = list(data.batches(10, augment=True, shuffle=True, generator=torch.Generator().manual_seed(1), pin_memory=True))
    assert len(pinned) == 2 * len(plain)  # images and labels of every batch
    for (x1, y1), (x2, y2) in zip(plain, staged, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    pinned.clear()
    rows = [1, 2, 3, 7, 20]
    a = list(iterate_images(bench.test.images, bench.eval_transform, 2, "cpu", rows, pin_memory=False))
    b = list(iterate_images(bench.test.images, bench.eval_transform, 2, "cpu", rows, pin_memory=True))
    assert len(pinned) == len(a) == 3 and all(torch.equal(u, v) for u, v in zip(a, b))


def test_training_loop_reads_nothing_back_per_step(monkeypatch, tmp_path):
    bench = make_synthetic_benchmark()
    data = make_session(bench, 0).train
    model, ctx = tiny_model(bench.schedule.num_base_classes), context(bench, tmp_path)
    reads = []
    real_float = torch.Tensor.__float__

    def no_item(self):
        raise AssertionError("Tensor.item() called inside the training loop")

    def counted_float(self):
        reads.append(1)
        return real_float(self)

    monkeypatch.setattr(torch.Tensor, "item", no_item)
    monkeypatch.setattr(torch.Tensor, "__float__", counted_float)
    recipe = SGDRecipe(epochs=3, lr=0.05, batch_size=8)
    losses = train_supervised(model, data, F.cross_entropy, recipe, ctx, "t")
    steps = recipe.epochs * data.num_batches(8, drop_last=True)
    assert steps > 3 * recipe.epochs  # several steps per epoch, so a per-step read would show
    assert len(reads) == recipe.epochs  # one read per epoch, for the epoch's mean loss
    assert len(losses) == recipe.epochs and all(math.isfinite(v) for v in losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_reads_back_once_per_epoch(tmp_path):
    import warnings

    bench = make_synthetic_benchmark()
    data = make_session(bench, 0).train
    ctx = context(bench, tmp_path)
    ctx.device = torch.device("cuda")
    model = tiny_model(bench.schedule.num_base_classes).cuda()
    recipe = SGDRecipe(epochs=2, lr=0.05, batch_size=8)
    train_supervised(model, data, F.cross_entropy, recipe, ctx, "warm-up")  # cuDNN set-up may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_supervised(model, data, F.cross_entropy, recipe, ctx, "t")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= recipe.epochs, [str(w.message) for w in syncs]
    assert ctx.extra["training_precision"] == "bf16 autocast"


def load_harness():
    path = Path(__file__).resolve().parents[1] / "perf" / "speed.py"
    spec = importlib.util.spec_from_file_location("fscil_speed_harness", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_harness_prints_every_figure_with_sane_values(tmp_path):
    speed = load_harness()
    bench = make_synthetic_benchmark()
    lines: list[str] = []
    figures = [speed.measure_train_step(bench, tmp_path / "a", images=48, epochs=1, rounds=1, batch_size=16),
               speed.measure_data_path(bench, images=48, rounds=1, batch_size=16)]
    figures += speed.measure_prototype(bench, tmp_path / "models")
    figures.append(speed.measure_session_cost(bench, tmp_path / "models", rounds=1, epochs=2))
    for figure in figures:
        lines.append(figure.line())
    names = [f.name for f in figures]
    assert names == ["train step", "data path", "prototype sessions (cache miss)", "prototype sessions (cache hit)",
                     "session cost"]
    for figure, line in zip(figures, lines):
        assert figure.ours > 0 and figure.reference > 0 and math.isfinite(figure.ratio)
        assert line.startswith(f"{figure.name}: ours ") and f"ratio {figure.ratio:.3f} (target {figure.target})" in line
    assert figures[0].notes["images"] == "48x1 epochs"
    assert figures[4].notes["sessions"] == len(bench.schedule) - 1 and figures[4].notes["rounds"] == 1
    for key in ("mean acc ours", "mean acc Avalanche"):
        assert 0 <= float(figures[4].notes[key].rstrip("%")) <= 100


def test_harness_rejects_bad_arguments(capsys):
    speed = load_harness()
    assert speed.main(["--sections", "train,nope"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown section nope; choose from train, data, prototype, session, isolation"
    assert speed.main(["--benchmark", "no-such-benchmark"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown benchmark 'no-such-benchmark'")


@pytest.mark.parametrize("name", ["convnet4-small", "resnet12"])
def test_batchnorm_folded_inference_matches_and_follows_weight_changes(name):
    from fscil_bench.models import build_backbone
    from fscil_bench.models.inference import inference_network

    def close(a, b):  # equal up to float rounding, relative to the outputs' scale
        return bool((a - b).abs().max() <= 1e-4 * b.abs().max())

    torch.manual_seed(0)
    net = build_backbone(name)
    x = torch.randn(6, 3, 32, 32)
    net.train()
    net(torch.randn(16, 3, 32, 32))  # non-trivial running statistics
    net.eval()
    state = copy.deepcopy(net.state_dict())
    folded = inference_network(net)
    with torch.no_grad():
        before_training = net(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()), "no BatchNorm was folded"
    with torch.no_grad():
        assert close(folded(x), net(x))
    assert inference_network(net) is folded  # unchanged network: the copy is reused
    before = folded(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    net(x).sum().backward()
    opt.step()
    refolded = inference_network(net)  # updated in place: same structure, new weights
    with torch.no_grad():
        assert not close(before, net(x))
        assert close(refolded(x), net(x))
    net.train()
    net(torch.randn(16, 3, 32, 32) + 1.0)  # only the BatchNorm statistics change
    net.eval()
    with torch.no_grad():
        assert close(inference_network(net)(x), net(x))
    net.load_state_dict(state)  # back to the first weights
    with torch.no_grad():
        assert close(inference_network(net)(x), before_training)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is left as it was


def test_batchnorm_folding_keeps_what_it_cannot_fold():
    from fscil_bench.models.inference import inference_network

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=True)
            self.bn = nn.BatchNorm2d(4)  # folded: the conv's only user
            self.shared = nn.Conv2d(4, 4, 1)
            self.bn_shared = nn.BatchNorm2d(4)  # kept: the conv output is also used by the residual
            self.batch_stats = nn.BatchNorm2d(4, track_running_stats=False)  # kept: batch statistics

        def forward(self, x):
            h = self.bn(self.conv(x))
            s = self.shared(h)
            return self.batch_stats(self.bn_shared(s) + s)

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else -x  # data-dependent branch

    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, 8).abs()
    branchy, untraceable = Branchy(), Untraceable()
    for net in (branchy, untraceable):
        net.train()
        net(x)
        net.eval()
        with torch.no_grad():
            assert torch.allclose(inference_network(net)(x), net(x), atol=1e-5)
    kept = [name for name, m in inference_network(branchy).named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert kept == ["bn_shared", "batch_stats"]
    unfolded = inference_network(untraceable)
    assert unfolded is not untraceable and isinstance(unfolded.bn, nn.BatchNorm2d)
