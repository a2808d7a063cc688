"""Named views and method-owned views: what a method's preset declares is what it trains and is tested on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fscil_bench import MethodBase
from fscil_bench.data.augment import CenterCrop, Pipeline, Resize
from fscil_bench.data.transforms import Normalization
from fscil_bench.data.views import (
    CEC_CIFAR_NORM,
    NC_CIFAR_NORM,
    VIEWS,
    MethodViews,
    ViewInputs,
    build_view,
)
from fscil_bench.registry import UnknownName
from fscil_bench.run.runner import make_session, method_views, run_method

GLYPH_LIKE = ViewInputs("glyphs100", Normalization((0.5, 0.5, 0.5), (0.3, 0.3, 0.3)), flip=False)


@pytest.mark.parametrize("name", VIEWS.names())
def test_every_named_view_gives_the_published_size(name):
    family = {"cifar": "cifar100", "mini": "mini_imagenet", "cub": "cub200"}[name.split("-")[1]]
    stored = {"cifar100": 32, "mini_imagenet": 84, "cub200": 256}[family]
    size = {"cifar100": 32, "mini_imagenet": 84, "cub200": 224}[family]
    view = build_view(name, ViewInputs(family, Normalization((0, 0, 0), (1, 1, 1))))
    out = view(torch.randint(0, 256, (3, stored, stored, 3), dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, size, size)
    assert VIEWS.get(name).source.split("@")[0] in ("NeuralCollapseApplications/FSCIL", "icoz69/CEC-CVPR2021",
                                                     "CanPeng123/FSCIL_ALICE", "zysong0113/SAVC")


def test_published_normalisation_on_its_family_and_the_benchmarks_elsewhere():
    cifar = ViewInputs("cifar100", Normalization((0, 0, 0), (1, 1, 1)))
    assert build_view("nc-cifar-test", cifar).norm == NC_CIFAR_NORM
    assert build_view("cec-cifar-test", cifar).norm == CEC_CIFAR_NORM
    assert build_view("nc-cifar-test", GLYPH_LIKE).norm == GLYPH_LIKE.norm
    assert NC_CIFAR_NORM.mean[0] == pytest.approx(0.50707, abs=1e-5)


def test_no_flip_where_a_mirror_image_is_another_class():
    names = lambda view: [type(s).__name__ for s in view.steps]  # noqa: E731
    assert "HorizontalFlip" in names(build_view("nc-cifar-train", ViewInputs("cifar100", GLYPH_LIKE.norm)))
    assert "HorizontalFlip" not in names(build_view("nc-cifar-train", GLYPH_LIKE))


def test_nc_cifar_test_view_is_bicubic_resize_36_then_centre_crop_32():
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    view = build_view("nc-cifar-test", ViewInputs("cifar100", Normalization((0, 0, 0), (1, 1, 1))))
    x = images.permute(0, 3, 1, 2).float() / 255
    expected = torch.nn.functional.interpolate(x, size=(36, 36), mode="bicubic", align_corners=False)
    expected = expected.mul(255).round().clamp(0, 255).div(255)[..., 2:34, 2:34]
    scaled = view(images) * torch.tensor(NC_CIFAR_NORM.std).view(1, 3, 1, 1) + torch.tensor(NC_CIFAR_NORM.mean).view(1, 3, 1, 1)
    assert torch.allclose(scaled, expected, atol=1e-5)


def test_unknown_view_names_the_close_ones():
    with pytest.raises(UnknownName, match="did you mean 'nc-cifar-test'"):
        build_view("nc-cifar-tset", GLYPH_LIKE)


@dataclass(frozen=True)
class ViewHparams:
    train_view: str | None = None
    test_view: str | None = None


class ShapeSpy(MethodBase):
    """Records the sessions it gets and the shape of the test images it is shown."""

    name = "shape-spy"
    presets = {"own": ViewHparams(test_view="small-test"), "benchmark": ViewHparams()}
    seen: list = []

    @classmethod
    def views(cls, hparams, inputs):
        if hparams.test_view == "small-test":
            small = Pipeline(inputs.norm, (Resize(12), CenterCrop(10)))
            return MethodViews(train=small, test=small, train_name="small-train", test_name="small-test")
        return super().views(hparams, inputs)

    def fit_base(self, session, ctx):
        ShapeSpy.seen.append(("session", session.train, ctx.views))
        self.num_seen = session.num_seen

    def fit_session(self, session, ctx):
        self.num_seen = session.num_seen

    def predict(self, images):
        ShapeSpy.seen.append(("test", tuple(images.shape[1:])))
        return torch.zeros(images.shape[0], self.num_seen)


def test_the_runner_hands_the_method_its_own_views(synthetic_benchmark, run_options):
    ShapeSpy.seen = []
    result = run_method(synthetic_benchmark, ShapeSpy, "own", 0, run_options)
    assert result.status == "completed", result.error
    (_, train, ctx_views), *tests = ShapeSpy.seen
    assert ctx_views == {"train": "small-train", "test": "small-test"} == result.config["views"]
    x, _ = next(train.batches(4, augment=True, generator=torch.Generator()))
    assert x.shape[-2:] == (10, 10)
    assert {shape for _, shape in tests} == {(3, 10, 10)}  # every test batch went through the method's view
    # the default: the benchmark's transforms, and nothing in the record or the cache keys
    ShapeSpy.seen = []
    result = run_method(synthetic_benchmark, ShapeSpy, "benchmark", 0, run_options)
    assert "views" not in result.config and ShapeSpy.seen[0][2] is None
    assert {shape for _, shape in ShapeSpy.seen[1:]} == {(3, 16, 16)}


def test_named_views_reach_the_session_and_keep_the_raw_images(synthetic_benchmark):
    views = method_views(ShapeSpy, ViewHparams(train_view="cec-cifar-train", test_view="cec-cifar-test"), synthetic_benchmark)
    assert views.identity == {"train": "cec-cifar-train", "test": "cec-cifar-test"}
    session = make_session(synthetic_benchmark, 1, views)
    assert session.train.train_transform is views.train and session.train.eval_transform is views.test
    plain = make_session(synthetic_benchmark, 1)
    assert np.array_equal(plain.train.raw_images.numpy(), session.train.raw_images.numpy())
    assert plain.train.eval_transform is synthetic_benchmark.eval_transform


def test_a_bad_view_name_fails_the_run_before_training(synthetic_benchmark, run_options):
    class Bad(ShapeSpy):
        name = "bad"
        presets = {"quick": ViewHparams(test_view="no-such-view")}

    result = run_method(synthetic_benchmark, Bad, "quick", 0, run_options)
    assert result.status == "failed" and "unknown view 'no-such-view'" in result.error["message"]


def test_a_benchmark_tells_views_its_family_normalisation_and_whether_it_mirrors(synthetic_benchmark):
    from dataclasses import replace

    from fscil_bench.data.transforms import CropFlip

    inputs = synthetic_benchmark.view_inputs()
    assert inputs.family == "synthetic" and inputs.norm == synthetic_benchmark.eval_transform.norm and inputs.flip
    no_mirror = replace(synthetic_benchmark, train_transform=CropFlip(inputs.norm, size=16, flip=False))
    assert not no_mirror.view_inputs().flip
class WidthTeller(ShapeSpy):
    """Predicts class 0 for test images 10 pixels wide (its own test view), else class 1, and
    notes the size of its augmented training batches: what it was shown, told from its worker."""

    name = "width-teller"

    def fit_base(self, session, ctx):
        x, _ = next(session.train.batches(4, augment=True, generator=torch.Generator()))
        ctx.extra["train_size"] = list(x.shape[-2:])
        self.num_seen = session.num_seen

    def predict(self, images):
        logits = torch.zeros(images.shape[0], self.num_seen)
        logits[:, 0 if images.shape[-1] == 10 else 1] = 1.0
        return logits


def test_the_method_s_worker_builds_its_views_and_applies_the_run_s_overrides(synthetic_benchmark, run_options):
    """Isolated, the worker makes the method's views from its class and the benchmark's view
    inputs (sent as data), and resolves the same overrides: the same answers as in-process."""
    isolated = dataclasses.replace(run_options, isolation="process")
    for overrides, size, shown in (({}, [10, 10], 0), ({"test_view": None}, [16, 16], 1)):
        results = [run_method(synthetic_benchmark, WidthTeller, "own", 0, options, overrides)
                   for options in (isolated, run_options)]
        for result in results:
            assert result.status == "completed", result.error
            assert result.config["overrides"] == overrides and result.extra["train_size"] == size
            assert all(set(p.tolist()) == {shown} for p in result.predictions)
        assert [r.isolation["level"] for r in results] == ["process", "none"]
        assert results[0].config == results[1].config
        assert results[0].config.get("views") == ({"train": "small-train", "test": "small-test"} if shown == 0 else None)
