"""Tracks: runs from pretrained weights get a track of their own, decided before they run; reports
put each track in its own table, never rank across tracks, and flag weights whose training data
contain the benchmark's classes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from test_report import LABELS, fake_record

from fscil_bench import MethodBase
from fscil_bench.baselines.fecam import FeCAM
from fscil_bench.baselines.ranpac import RanPAC
from fscil_bench.baselines.simplecil import SimpleCIL
from fscil_bench.benchmarks.benchmark import LoadOptions
from fscil_bench.reporting.report import write_reports
from fscil_bench.results.store import ResultsStore, RunKey
from fscil_bench.results.tracks import method_track, record_track, track_of
from fscil_bench.run.grid import run_grid
from fscil_bench.run.methods import MethodRegistry
from fscil_bench.run.overrides import Override
from fscil_bench.run.runner import RunOptions


def test_the_track_follows_from_the_resolved_hyperparameters():
    assert track_of(SimpleCIL.resolve_preset("quick", "cifar100")) == "scratch"
    assert track_of({"pretrained": None}) == track_of(object()) == "scratch"
    assert track_of({"pretrained": "timm-vit-b16-in21k"}) == "pretrained-timm-vit-b16-in21k"
    assert track_of({"pretrained": "/data/My Weights/vit b16.safetensors"}) == "pretrained-vit_b16"
    assert method_track(SimpleCIL, "paper", "cifar100") == "pretrained-timm-vit-b16-in21k"
    assert method_track(FeCAM, "pretrained", "cub200") == "pretrained-timm-vit-b16-in21k"
    assert method_track(RanPAC, "paper", "cub200") == "pretrained-timm-vit-b16-in21k-ft-in1k"
    assert method_track(RanPAC, "no-such-preset", "cub200") == "scratch"  # that run fails and says why
    # A record written before records stated their track: derived from its hyperparameters.
    assert record_track({"config": {"hparams": {"pretrained": "clip-vit-b16-openai"}}}) == "pretrained-clip-vit-b16-openai"
    assert record_track({"track": "scratch", "config": {"hparams": {"pretrained": "x"}}}) == "scratch"


@dataclass(frozen=True)
class FileHparams:
    pretrained: str | None = None


class NearestMeanOnFile(MethodBase):
    """Class means of raw pixels; its hyperparameters name a weights file (it reads none)."""

    name = "pixels-on-file"
    presets = {"quick": FileHparams()}

    def fit_base(self, session, ctx):
        self.means = torch.empty(0, 16 * 16 * 3)
        self.fit_session(session, ctx)

    def fit_session(self, session, ctx):
        x, y = next(session.train.batches(10_000, augment=False))
        self.means = torch.cat([self.means, torch.stack([x[y == c].flatten(1).mean(0) for c in session.new_classes])])

    def predict(self, images):
        return -torch.cdist(images.flatten(1), self.means)


def test_the_grid_files_a_run_with_weights_under_its_track(tmp_path, synthetic_benchmark, monkeypatch):
    weights = tmp_path / "my weights.pth"
    weights.write_bytes(b"weights")
    cls = type("Pixels", (NearestMeanOnFile,), {"presets": {"quick": FileHparams(str(weights))}})
    registry = MethodRegistry()
    registry.add(cls.name, cls)
    monkeypatch.setattr("fscil_bench.run.grid.get_benchmark", lambda name: type(
        "Spec", (), {"id": synthetic_benchmark.id, "family": "synthetic", "load": lambda self, o: synthetic_benchmark})())
    store = ResultsStore(tmp_path / "runs")
    options = RunOptions(cache_dir=tmp_path / "cache", log=lambda m: None, isolation="none")  # a class defined in the test
    outcomes = run_grid(["synthetic"], [cls.name], [0], "quick", registry, store, options,
                        LoadOptions(cache_dir=tmp_path / "cache"), echo=lambda m: None)
    key = RunKey(synthetic_benchmark.id, cls.name, "quick", 0, track="pretrained-my_weights")
    assert outcomes[0].key == key and outcomes[0].status == "completed"
    record = json.loads((store.run_dir(key) / "record.json").read_text())
    assert record["track"] == "pretrained-my_weights"
    assert store.run_dir(key).parent.name == "quick~pretrained-my_weights"
    assert [o.status for o in run_grid(["synthetic"], [cls.name], [0], "quick", registry, store, options,
                                       LoadOptions(cache_dir=tmp_path / "cache"), echo=lambda m: None)] == ["skipped"]
    # --set pretrained=... is another run, on the track of the weights it names.
    other = tmp_path / "other.pth"
    other.write_bytes(b"other weights")
    moved = run_grid(["synthetic"], [cls.name], [0], "quick", registry, store, options,
                     LoadOptions(cache_dir=tmp_path / "cache"), echo=lambda m: None,
                     overrides=[Override("pretrained", str(other))])
    assert moved[0].status == "completed" and moved[0].key.track == "pretrained-other"
    assert moved[0].key.preset.startswith("quick+") and store.run_dir(moved[0].key).parent.name.endswith("~pretrained-other")


def _put(store: ResultsStore, method: str, correct: list[int], track: str, weights: dict | None, family: str) -> None:
    record, preds = fake_record(method, 0, correct, bench="mini@1", family=family)
    record["track"] = track
    if weights:
        record["extra"] = {"pretrained": weights, "extra_data": f"pretrained weights {weights['name']}: {weights['trained_on']}"}
    store.write(RunKey("mini@1", method, "quick", 0, track=track), record, preds, LABELS)


def test_each_track_has_its_own_table_ranked_alone_and_overlapping_data_is_flagged(tmp_path, monkeypatch):
    monkeypatch.setattr("fscil_bench.reporting.report._figures", lambda *args: [])
    store = ResultsStore(tmp_path / "runs")
    vit = {"name": "timm-vit-b16-in21k", "sha256": "e5005f0a" + "0" * 56, "trained_on": "ImageNet-21k",
           "overlaps": ["mini_imagenet"]}
    for family, out in (("mini_imagenet", "lb"), ("glyphs100", "lb-glyphs")):
        _put(store, "scratchy", [8, 8, 8], "scratch", None, family)
        _put(store, "big-vit", [10, 12, 15], "pretrained-timm-vit-b16-in21k", vit, family)
        written = write_reports(store, tmp_path / out)
        names = sorted(p.name for p in written if p.suffix == ".md")
        assert names == ["mini-v1-pretrained-timm-vit-b16-in21k.md", "mini-v1.md"]
        scratch = (tmp_path / out / "mini-v1.md").read_text()
        pretrained = (tmp_path / out / "mini-v1-pretrained-timm-vit-b16-in21k.md").read_text()
        assert "| scratchy" in scratch and "big-vit" not in scratch.split("## Definitions")[0]
        assert "| big-vit" in pretrained and "| scratchy" not in pretrained
        assert "**80.00**" in scratch  # the best of its own table, though the pretrained run scores higher
        assert pretrained.startswith("# mini@1, track pretrained-timm-vit-b16-in21k")
        assert "sha256 e5005f0a00000000..., trained on ImageNet-21k" in pretrained
        assert "extra data: pretrained weights timm-vit-b16-in21k: ImageNet-21k" in pretrained
        flagged = "Warning: the data these weights were trained on contain this benchmark's classes"
        assert (flagged in pretrained) == (family == "mini_imagenet")
        index = (tmp_path / out / "index.html").read_text()
        assert "mini@1, track pretrained-timm-vit-b16-in21k" in index
        store = ResultsStore(tmp_path / f"runs-{family}-next")
