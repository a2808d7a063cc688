"""Base models cached by recipe and data: trained once, loaded after, never served for other data."""

import json
import os
import threading

import numpy as np
import torch
from torch import nn

from fscil_bench.cli import main
from fscil_bench.data.arrays import ImageArray, LabelledImages
from fscil_bench.data.image_files import files_fingerprint, load_images_cached
from fscil_bench.protocol import BenchmarkInfo, Context
from fscil_bench.run.runner import make_session
from fscil_bench.toolkit.base_models import (
    base_model_recipe_key,
    cached_model,
    cross_entropy_base_model,
    warm_start_recipe,
    warm_start_weights,
)
from fscil_bench.toolkit.exemplars import labelled_images
from fscil_bench.toolkit.training import SGDRecipe
from real_data_fixtures import write_yaml_benchmark

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


def test_a_method_with_views_of_its_own_warm_starts_from_the_model_every_other_method_shares(synthetic_benchmark, tmp_path):
    """The warm-start model is keyed and trained without the asking method's views: the one a
    method without views trains, loaded, and the same weights."""
    session = make_session(synthetic_benchmark, 0)
    logs: list[str] = []
    shared = cross_entropy_base_model(session, make_ctx(synthetic_benchmark, tmp_path, logs), "convnet4-small", RECIPE)
    views = {"train": "alice-cifar-train", "test": "alice-cifar-test"}
    ctx = Context.create(synthetic_benchmark.info(), None, 0, cache_dir=tmp_path, log=logs.append, views=views)
    own_view = session.train.train_transform
    session.train.train_transform = lambda images, generator: 1 / 0  # a method's view: never used here
    weights, recipe = warm_start_weights(session, ctx, "convnet4-small", RECIPE)
    assert "base_model" not in ctx.extra and logs[-1].endswith("loaded from cache")
    assert recipe == warm_start_recipe(ctx, "convnet4-small", RECIPE) and recipe["views"] is None
    assert weights.keys() == shared.backbone.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in shared.backbone.state_dict().items())
    # The recipe's own "views" entry wins over the method's; without it the method's views count.
    plain = {k: v for k, v in recipe.items() if k != "views"}
    assert base_model_recipe_key("b@1", 0, recipe, views) == base_model_recipe_key("b@1", 0, plain)
    assert base_model_recipe_key("b@1", 0, plain, views) != base_model_recipe_key("b@1", 0, plain)
    # Its own views untouched, the benchmark's still at hand; nothing to warm start from: nothing.
    assert session.train.benchmark_transforms[0] is own_view
    assert session.train.with_benchmark_transforms().raw_images is session.train.raw_images
    subset = labelled_images(session.train.raw_images[:4], session.train.labels[:4], session.train)
    assert subset.train_transform is session.train.train_transform and subset.benchmark_transforms[0] is own_view
    assert warm_start_weights(session, ctx, "convnet4-small", None) == (None, None)


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
    first_training, second_waiting, may_finish = threading.Event(), threading.Event(), threading.Event()
    data = make_session(synthetic_benchmark, 0).train

    def log(line: str) -> None:
        logs.append(line)
        if line.startswith("waiting for another process that holds"):
            second_waiting.set()

    def train(name: str):
        def run(model: nn.Module) -> None:
            trained_by.append(name)
            first_training.set()
            assert may_finish.wait(600)
        return run

    def worker(name: str) -> None:
        ctx = Context.create(synthetic_benchmark.info(), None, 0, cache_dir=tmp_path, log=log)
        cached_model(ctx, {"kind": "toy"}, lambda: nn.Linear(3, 2), train(name), data=data)
        cache_hits[name] = ctx.extra["base_model"]["cache_hit"]

    first = threading.Thread(target=worker, args=("first",))
    first.start()
    assert first_training.wait(600)
    second = threading.Thread(target=worker, args=("second",))
    second.start()
    assert second_waiting.wait(600), "the second worker did not wait for the first"
    assert trained_by == ["first"] and "second" not in cache_hits
    may_finish.set()
    first.join()
    second.join()
    assert trained_by == ["first"]
    assert cache_hits == {"first": False, "second": True}


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


def with_one_pixel_changed(data: LabelledImages) -> LabelledImages:
    images = data.raw_images.numpy().copy()
    images[3, 5, 7, 0] ^= 0x40
    return LabelledImages(ImageArray(images, data.labels.numpy()), data.train_transform, data.eval_transform)


def test_other_training_data_is_another_model_from_the_same_initial_weights(synthetic_benchmark, tmp_path):
    """One changed pixel of the base session: a cache miss under another key, trained again; the
    initial weights are the same, since the seeds come from the recipe, not from the data."""
    data = make_session(synthetic_benchmark, 0).train
    initial, notes = [], []

    def train(model: nn.Module) -> None:
        initial.append({k: v.clone() for k, v in model.state_dict().items()})
        with torch.no_grad():
            model.weight.add_(1.0)

    for images in (data, with_one_pixel_changed(data), data):
        ctx = make_ctx(synthetic_benchmark, tmp_path, [])
        cached_model(ctx, {"kind": "toy"}, lambda: nn.Linear(3, 2), train, data=images)
        notes.append(ctx.extra["base_model"])
    first, changed, again = notes
    assert [n["cache_hit"] for n in notes] == [False, False, True]
    assert changed["key"] != first["key"] == again["key"]
    assert changed["data_sha256"] != first["data_sha256"] and changed["recipe_key"] == first["recipe_key"]
    assert len(initial) == 2 and all(torch.equal(initial[0][k], initial[1][k]) for k in initial[0])
    assert sorted(p.name for p in (tmp_path / "base_models").glob("*.pt")) == sorted(
        f"{n['key']}.pt" for n in (first, changed))


def test_a_custom_benchmark_whose_images_were_replaced_trains_its_base_model_again(tmp_path, capsys):
    """The user corrects the images of a YAML benchmark and runs again (same name, same cache):
    the base model is trained on the new images, never loaded from the old ones'."""
    yaml_file = write_yaml_benchmark(tmp_path / "bench", seed=0)

    def run(output: str) -> dict:
        assert main(["run", "-b", str(yaml_file), "-m", "prototype", "--preset", "smoke", "-o", str(tmp_path / output),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        record = json.loads(next((tmp_path / output).glob("*/*/*/seed-0/record.json")).read_text())
        return record["extra"]["base_model"]

    first = run("runs1")
    write_yaml_benchmark(tmp_path / "bench", seed=1)  # the same files, new pixels
    replaced = run("runs2")
    unchanged = run("runs3")
    assert (first["cache_hit"], replaced["cache_hit"], unchanged["cache_hit"]) == (False, False, True)
    assert replaced["data_sha256"] != first["data_sha256"] and replaced["key"] != first["key"]
    assert unchanged["key"] == replaced["key"]


def _bmp(path, value: int) -> None:
    from PIL import Image

    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path, format="BMP")


def test_an_image_file_replaced_by_one_of_the_same_size_is_decoded_again(tmp_path):
    """The decoded-image cache is keyed by path, size and modification time: a corrected image of
    the same byte size (an uncompressed format) is not served from the old decode."""
    files = [tmp_path / "data" / f"img{k}.bmp" for k in range(3)]
    files[0].parent.mkdir()
    for k, f in enumerate(files):
        _bmp(f, 10 * k)
    kwargs = dict(root=tmp_path / "data", dataset="bmp", split="train", size=6, fit="squash", cache_dir=tmp_path / "cache",
                  log=lambda m: None, workers=1)
    before, size = files_fingerprint(files, tmp_path / "data"), files[1].stat().st_size
    assert load_images_cached(files, **kwargs)[1].max() == 10
    stamp = files[1].stat().st_mtime_ns
    _bmp(files[1], 200)
    os.utime(files[1], ns=(stamp + 10**9, stamp + 10**9))  # saved a second later (file systems differ in resolution)
    assert files[1].stat().st_size == size and files_fingerprint(files, tmp_path / "data") != before
    assert load_images_cached(files, **kwargs)[1].min() == 200
