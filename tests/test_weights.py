"""Pretrained weights: known names, checks, loading, frozen stages, the weights command; ResNet-20."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from fscil_bench.cli import main
from fscil_bench.models import build_backbone
from fscil_bench.models.weights import (
    KNOWN_WEIGHTS,
    WeightsError,
    WeightsSpec,
    load_state_dict,
    resolve_weights,
)
from fscil_bench.protocol import BenchmarkInfo, Context
from fscil_bench.toolkit.backbones import backbone_init


@pytest.fixture
def fake_known(tmp_path, monkeypatch):
    """A known name whose file is a ResNet-18 state_dict written here (its sha256 prefix recorded)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    source = tmp_path / "source.pth"
    torch.save(resnet18(weights=None).state_dict(), source)
    prefix = hashlib.sha256(source.read_bytes()).hexdigest()[:8]
    spec = WeightsSpec("test-resnet18", f"resnet18-{prefix}.pth", "https://example.invalid/r18.pth", prefix,
                       "resnet18", "a test set (10 classes)", overlaps=("mini_imagenet",))
    monkeypatch.setattr(KNOWN_WEIGHTS, "_entries", dict(KNOWN_WEIGHTS._entries))
    KNOWN_WEIGHTS.add(spec.name, spec)
    return spec, source


def test_the_resnet20_of_the_field(tmp_path):
    net = build_backbone("resnet20")
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64) and net.out_dim == 64
    assert net.forward_map(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)
    # 3 stages x 3 basic blocks of 16, 32, 64 channels: 0.27 M parameters (He et al., Table 6: 0.27M)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.27e6, rel=0.01)
    assert len(net.layer1) == len(net.layer2) == len(net.layer3) == 3


def test_a_known_name_resolves_from_the_folder_and_is_checked(fake_known, tmp_path):
    spec, source = fake_known
    folder = tmp_path / "weights"
    with pytest.raises(WeightsError, match=rf"needs the pretrained weights 'test-resnet18' .* put {spec.file} in "
                                           rf"{folder} \(from https://example.invalid/r18.pth\), or run "
                                           r"'fscil-bench weights fetch test-resnet18"):
        resolve_weights("test-resnet18", folder)
    folder.mkdir()
    shutil.copy(source, folder / spec.file)
    weights = resolve_weights("test-resnet18", folder)
    assert weights.sha256 == hashlib.sha256(source.read_bytes()).hexdigest() and weights.spec is spec
    assert weights.describe()["overlaps"] == ["mini_imagenet"]
    (folder / spec.file).write_bytes(b"not these weights")
    with pytest.raises(WeightsError, match="does not match 'test-resnet18'"):
        resolve_weights("test-resnet18", folder)


def test_an_unknown_reference_suggests_a_known_name(tmp_path):
    with pytest.raises(WeightsError, match=r"neither a file nor a known name \(did you mean "
                                           r"'torchvision-resnet18-imagenet1k-v1'\?\)"):
        resolve_weights("torchvision-resnet18-imagenet1k", tmp_path)


def test_loading_checks_the_keys_and_frozen_stages_stay_frozen(fake_known, tmp_path):
    spec, source = fake_known
    ctx = Context.create(BenchmarkInfo("toy", 1, "toy", 4, 1, 4, 32), None, 0, cache_dir=tmp_path,
                         weights_dir=tmp_path, log=lambda m: None)
    shutil.copy(source, tmp_path / spec.file)
    init = backbone_init(ctx, "resnet18", "test-resnet18", frozen_stages=1)
    assert ctx.extra["pretrained"]["name"] == "test-resnet18" and "a test set" in ctx.extra["extra_data"]
    assert init.identity == {"pretrained_sha256": init.weights.sha256, "frozen_stages": 1}
    net = init.build()
    state = torch.load(source, weights_only=True)
    assert torch.equal(net.net.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])
    frozen = [net.net.conv1, net.net.bn1, net.net.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in net.net.layer2.parameters())
    net.train()
    assert not net.net.bn1.training and not net.net.layer1[0].bn1.training and net.net.layer2[0].bn1.training
    before = net.net.bn1.running_mean.clone()
    net(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert torch.equal(net.net.bn1.running_mean, before)  # a frozen BatchNorm keeps its statistics
    assert backbone_init(ctx, "resnet18").identity == {}  # from scratch adds nothing to a key
    torch.save({"conv1.weight": state["conv1.weight"]}, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match="does not fit the backbone"):
        load_state_dict(build_backbone("resnet18"), resolve_weights(str(tmp_path / "partial.pt"), tmp_path))


def test_the_weights_command_lists_and_fetches(fake_known, tmp_path, monkeypatch, capsys):
    spec, source = fake_known
    folder = tmp_path / "w"
    assert main(["weights", "list", "--weights-dir", str(folder)]) == 0
    assert "test-resnet18" in capsys.readouterr().out

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["weights", "fetch", "test-resnet18", "--weights-dir", str(folder)]) == 2
    assert "could not download test-resnet18 from https://example.invalid/r18.pth" in capsys.readouterr().err
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, **kw: shutil.copy(source, dst))
    assert main(["weights", "fetch", "test-resnet18", "--weights-dir", str(folder)]) == 0
    assert (folder / spec.file).is_file()
    assert main(["weights", "fetch", "nope", "--weights-dir", str(folder)]) == 2
    assert "unknown weights 'nope'" in capsys.readouterr().err


def test_a_run_that_needs_missing_weights_stops_before_training(tmp_path, capsys):
    plugin = tmp_path / "needs_weights.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from fscil_bench import MethodBase\n\n"
        "@dataclass(frozen=True)\n"
        "class Hp:\n"
        "    pretrained: str | None = 'torchvision-resnet18-imagenet1k-v1'\n\n"
        "class NeedsWeights(MethodBase):\n"
        "    name = 'needs-weights'\n"
        "    presets = {'quick': Hp()}\n"
        "    def fit_base(self, session, ctx): raise AssertionError('trained without its weights')\n"
        "    def fit_session(self, session, ctx): pass\n"
        "    def predict(self, images): pass\n")
    runs = tmp_path / "runs"
    code = main(["run", "--plugin", str(plugin), "--methods", "needs-weights", "-b", "glyphs100-tiny",
                 "--output", str(runs), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    assert ("error: needs-weights [quick] on glyphs100 needs the pretrained weights "
            "'torchvision-resnet18-imagenet1k-v1' (ImageNet-1k") in err and "resnet18-f37072fd.pth" in err
    assert not list(runs.rglob("record.json"))
