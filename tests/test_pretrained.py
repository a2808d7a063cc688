"""The pretrained track, offline on a CPU: tiny timm and open_clip backbones built from their
configurations with random weights, saved in the libraries' formats, loaded through the weights
option and run through SimpleCIL, FeCAM and RanPAC on glyphs100-tiny; checked files, features
computed once, the track of every run."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest
import torch
from conftest import make_synthetic_benchmark

from fscil_bench.baselines.etf import ETF
from fscil_bench.baselines.fecam import FeCAM
from fscil_bench.baselines.prototype import Prototype
from fscil_bench.baselines.ranpac import RanPAC
from fscil_bench.baselines.simplecil import SimpleCIL
from fscil_bench.benchmarks.benchmark import LoadOptions
from fscil_bench.benchmarks.registry import get_benchmark
from fscil_bench.cli import main
from fscil_bench.integrations.pretrained import pretrained_backbone
from fscil_bench.models.weights import KNOWN_WEIGHTS, WeightsError, WeightsSpec
from fscil_bench.protocol import Context
from fscil_bench.results.tracks import method_track
from fscil_bench.run.runner import RunOptions, run_method

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

# Networks of a few thousand parameters on 32 px glyphs (4 patches): seconds on a CPU.
TIMM_ARGS = {"img_size": 32, "patch_size": 16, "depth": 1, "embed_dim": 32, "num_heads": 2}
CLIP_ARGS = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Random tiny networks saved as the libraries save them: a timm ViT (with a 10-class head) as
    ``.safetensors``, an open_clip CLIP as a ``.pt`` state_dict."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TIMM_ARGS).eval()
    save_file(vit.state_dict(), folder / "tiny-vit.safetensors")
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **CLIP_ARGS).eval()
    torch.save(clip.state_dict(), folder / "tiny-clip.pt")
    return {"folder": folder, "timm": (vit, folder / "tiny-vit.safetensors"), "open_clip": (clip, folder / "tiny-clip.pt")}


def _spec(name: str, path, backbone: str, args: dict) -> WeightsSpec:
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return WeightsSpec(name, path.name, f"https://example.invalid/{path.name}", prefix, backbone, "random numbers",
                       overlaps=("mini_imagenet",), backbone_args=tuple(args.items()))


@pytest.fixture
def known_tiny(tiny_models, monkeypatch):
    """The two tiny files as known weights (names, hashes, architectures) in their folder."""
    monkeypatch.setattr(KNOWN_WEIGHTS, "_entries", dict(KNOWN_WEIGHTS._entries))
    for spec in (_spec("tiny-timm-vit", tiny_models["timm"][1], "timm:vit_tiny_patch16_224", TIMM_ARGS),
                 _spec("tiny-open-clip", tiny_models["open_clip"][1], "open_clip:ViT-B-16", CLIP_ARGS)):
        KNOWN_WEIGHTS.add(spec.name, spec)
    return tiny_models


@pytest.fixture(scope="module")
def glyphs_tiny(tmp_path_factory):
    return get_benchmark("glyphs100-tiny").load(LoadOptions(cache_dir=tmp_path_factory.mktemp("data"), log=lambda m: None))


def on_weights(method_cls: type, weights: str) -> type:
    """``method_cls`` with a ``tiny`` preset: its smoke settings on ``weights``."""
    hp = dataclasses.replace(method_cls.resolve_preset("smoke", "glyphs100"), pretrained=weights)
    return type(method_cls.__name__, (method_cls,), {"presets": {"tiny": hp}})


def direct_features(library: str, model, images) -> torch.Tensor:
    """The saved network's features of uint8 images, computed the library's way (no resizing: 32 px)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        if library == "timm":
            return model.forward_head(model.forward_features((x - 0.5) / 0.5), pre_logits=True)
        mean = torch.tensor(model.visual.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(model.visual.image_std).view(1, 3, 1, 1)
        return model.encode_image((x - mean) / std)


@pytest.mark.parametrize("weights, library", [("tiny-timm-vit", "timm"), ("tiny-open-clip", "open_clip")])
def test_tiny_library_backbones_run_the_three_methods_and_embed_each_image_once(weights, library, known_tiny,
                                                                                glyphs_tiny, tmp_path):
    options = RunOptions(cache_dir=tmp_path / "cache", weights_dir=known_tiny["folder"], log=lambda m: None,
                         isolation="none")  # classes of this module, and the test counts their calls
    model, path = known_tiny[library]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    results, embedded = {}, []
    for method_cls in (SimpleCIL, FeCAM, RanPAC):
        cls = on_weights(method_cls, weights)
        assert method_track(cls, "tiny", "glyphs100") == f"pretrained-{weights}"
        result = run_method(glyphs_tiny, cls, "tiny", 0, options)
        assert result.status == "completed", result.error and result.error["traceback"]
        assert result.sessions_done == len(glyphs_tiny.schedule)
        stated = result.extra["pretrained"]
        assert (stated["name"], stated["sha256"], stated["trained_on"]) == (weights, sha, "random numbers")
        assert stated["library"].startswith(library) and stated["view"]["size"] == 32
        results[method_cls.name] = result
        embedded.append(result.extra["feature_extraction"]["images_embedded"])
    # The first method embeds every training image of the sessions and every test image once;
    # the other two read all of them from the cache.
    used = sum(len(s.train_indices) for s in glyphs_tiny.schedule.sessions)
    assert embedded == [used + len(glyphs_tiny.test), 0, 0]
    # SimpleCIL's answer, computed directly from the saved network: cosine to the class-mean features.
    train_rows = [i for s in glyphs_tiny.schedule.sessions for i in s.train_indices]
    train = direct_features(library, model, glyphs_tiny.train.images[train_rows])
    labels = torch.from_numpy(glyphs_tiny.train.labels[train_rows])
    seen = glyphs_tiny.schedule.num_seen(len(glyphs_tiny.schedule) - 1)
    prototypes = torch.stack([train[labels == c].mean(0) for c in range(seen)])
    test = direct_features(library, model, glyphs_tiny.test.images[glyphs_tiny.test.labels < seen])
    expected = (torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(prototypes, dim=1).T).argmax(1)
    agree = (torch.from_numpy(results["simplecil"].predictions[-1]).long() == expected).float().mean()
    assert agree > 0.99  # float rounding may break near-ties of random features
@pytest.mark.parametrize("library", ["timm", "open_clip"])
def test_loaded_backbones_are_the_saved_networks_fed_their_own_view(library, known_tiny, glyphs_tiny, tmp_path):
    model, _ = known_tiny[library]
    ctx = Context.create(glyphs_tiny.info(), None, 0, cache_dir=tmp_path, weights_dir=known_tiny["folder"],
                         log=lambda m: None)
    name = {"timm": "tiny-timm-vit", "open_clip": "tiny-open-clip"}[library]
    backbone = pretrained_backbone(ctx, name, glyphs_tiny.eval_transform.norm)
    raw = torch.from_numpy(glyphs_tiny.test.images[:6])
    x01 = raw.permute(0, 3, 1, 2).float() / 255
    if library == "timm":
        mean, std = (0.5,) * 3, (0.5,) * 3
        expected = model.forward_head(model.forward_features((x01 - 0.5) / 0.5), pre_logits=True)
    else:
        mean, std = model.visual.image_mean, model.visual.image_std
        normalised = (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        expected = model.encode_image(normalised)
    assert ctx.extra["pretrained"]["view"]["mean"] == list(mean)
    got = backbone(glyphs_tiny.eval_transform(raw, None))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert backbone.out_dim == expected.shape[1]


def test_weights_that_do_not_fit_the_architecture_fail_with_one_line(known_tiny, glyphs_tiny, tmp_path):
    ctx = Context.create(glyphs_tiny.info(), None, 0, cache_dir=tmp_path, weights_dir=known_tiny["folder"],
                         log=lambda m: None)
    clip_file = str(known_tiny["open_clip"][1])
    with pytest.raises(WeightsError, match=r"does not fit timm model 'vit_tiny_patch16_224': .*Missing key") as info:
        pretrained_backbone(ctx, clip_file, glyphs_tiny.eval_transform.norm, "timm:vit_tiny_patch16_224",
                            tuple(TIMM_ARGS.items()))
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="need the backbone they fit: set backbone"):
        pretrained_backbone(ctx, clip_file, glyphs_tiny.eval_transform.norm)


def test_a_weights_file_whose_sha256_does_not_match_stops_the_run_with_one_line(tmp_path, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    spec = KNOWN_WEIGHTS.get("timm-vit-b16-in21k")
    (folder / spec.file).write_bytes(b"a truncated download")
    runs = tmp_path / "runs"
    code = main(["run", "-b", "glyphs100-tiny", "-m", "simplecil", "--preset", "pretrained", "--weights-dir",
                 str(folder), "--output", str(runs), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: simplecil [pretrained] on glyphs100 weights file ")
    assert f"does not match 'timm-vit-b16-in21k' (its sha256 starts with " in err and "expected e5005f0a" in err
    assert not list(runs.rglob("record.json"))


def test_prototype_and_etf_take_a_library_backbone_through_their_presets(known_tiny, tmp_path):
    for family in ("cifar100", "mini_imagenet", "cub200"):
        proto_hp = Prototype.resolve_preset("pretrained", family)
        assert (proto_hp.pretrained, proto_hp.train_backbone) == ("timm-vit-b16-in21k", False)
        etf_hp = ETF.resolve_preset("pretrained", family)
        assert (etf_hp.backbone, etf_hp.pretrained, etf_hp.train_backbone) == (
            "timm:vit_base_patch16_224", "timm-vit-b16-in21k", False)
    bench = make_synthetic_benchmark(sessions=2)  # 16 px images: the adapter resizes them to the ViT's 32 px
    options = RunOptions(cache_dir=tmp_path / "cache", weights_dir=known_tiny["folder"], log=lambda m: None,
                         isolation="none")
    proto = on_weights(Prototype, "tiny-timm-vit")
    proto.presets["tiny"] = dataclasses.replace(proto.presets["tiny"], backbone=None, train_backbone=False)
    assert proto().base_model_recipes(Context.create(bench.info(), proto.presets["tiny"], 0, cache_dir=tmp_path)) == []
    result = run_method(bench, proto, "tiny", 0, options)
    assert result.status == "completed", result.error and result.error["traceback"]
    assert result.extra["pretrained"]["name"] == "tiny-timm-vit"
    assert result.extra["pretrained"]["view"]["size"] == 32
    hp = dataclasses.replace(ETF.resolve_preset("smoke", "glyphs100"), backbone="timm:vit_tiny_patch16_224",
                             pretrained="tiny-timm-vit", train_backbone=False)
    etf = type("ETF", (ETF,), {"presets": {"tiny": hp}})
    assert method_track(etf, "tiny", "glyphs100") == "pretrained-tiny-timm-vit"
    result = run_method(bench, etf, "tiny", 0, options)
    assert result.status == "completed", result.error and result.error["traceback"]
    assert result.extra["pretrained"]["name"] == "tiny-timm-vit"
    # What a dry run declares is the recipe the base session handed the cache.
    ctx = Context.create(bench.info(), hp, 0, cache_dir=tmp_path / "cache", weights_dir=known_tiny["folder"])
    assert etf().base_model_recipes(ctx) == [result.extra["base_model"]["recipe"]]
    # The neck learned on the features the prototype run cached (the same frozen network, the same key).
    assert len(list((tmp_path / "cache" / "features").glob("memo-*"))) == 1
    trained = dataclasses.replace(hp, train_backbone=True)
    failed = run_method(bench, type("ETF", (ETF,), {"presets": {"tiny": trained}}), "tiny", 0, options)
    assert failed.status == "failed" and "set train_backbone=False" in failed.error["message"]


def test_known_library_weights_name_their_sources_and_overlaps():
    for name, backbone in (("timm-vit-b16-in21k", "timm:vit_base_patch16_224"),
                           ("clip-vit-b16-openai", "open_clip:ViT-B-16-quickgelu")):
        spec = KNOWN_WEIGHTS.get(name)
        assert spec.backbone == backbone and spec.url.startswith("https://") and spec.url.endswith(spec.file)
        assert "mini_imagenet" in spec.overlaps and spec.trained_on
    clip = KNOWN_WEIGHTS.get("clip-vit-b16-openai")
    assert len(clip.sha256_prefix) == 64 and clip.sha256_prefix in clip.url  # OpenAI's address holds the full sha256
