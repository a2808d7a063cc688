"""The data a benchmark serves is pinned: golden sha256 digests of glyphs100's images and labels
(every variant) and of the few-shot picks of every built-in and shipped schedule.

glyphs100 is generated (Pillow, FreeType, matplotlib's fonts, torch's resampling, numpy's
generator) and its few-shot picks are drawn with numpy's generator, so a library upgrade could
change what ``glyphs100@1`` means without a line of this project changing. These tests turn that
into a failure. When one fails, the data really changed: bump the benchmark's version
(``GLYPHS_VERSION``, or the schedule's name) and record the new digests under the new id in
``golden_data.json`` (``python tests/test_pinned_data.py`` prints them); never overwrite the old.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fscil_bench.benchmarks import LoadOptions, get_benchmark
from fscil_bench.benchmarks.benchmark import Benchmark
from fscil_bench.data.arrays import ImageArray
from fscil_bench.schedules.files import ids_checksum, read_schedule_file, shipped_schedules

GOLDEN_FILE = Path(__file__).with_name("golden_data.json")
GLYPH_VARIANTS = ("glyphs100-tiny", "glyphs100-small", "glyphs100")


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def picks_digests(bench: Benchmark) -> list[str]:
    """Per session, the sha256 of its training-sample indices (int64, in schedule order)."""
    return [sha256(np.asarray(s.train_indices, dtype=np.int64)) for s in bench.schedule.sessions]


def data_digests(bench: Benchmark) -> dict[str, object]:
    return {"train_images": sha256(bench.train.images), "train_labels": sha256(bench.train.labels.astype(np.int64)),
            "test_images": sha256(bench.test.images), "test_labels": sha256(bench.test.labels.astype(np.int64)),
            "shapes": [list(bench.train.images.shape), list(bench.test.images.shape)]}


def shipped_digests(name: str) -> dict[str, object]:
    """A shipped schedule file's sessions: classes, shots, sample count and the sha256 of its ids."""
    sched = read_schedule_file(name)
    sessions = [[s.first_class, s.ways, s.shots, s.count, ids_checksum(s.ids) if s.ids is not None else s.sha256]
                for s in sched.sessions]
    names = None if sched.class_names is None else hashlib.sha256("\n".join(sched.class_names).encode()).hexdigest()
    return {"dataset": sched.dataset, "num_classes": sched.num_classes, "sessions": sessions, "class_names": names}


def labels_only(monkeypatch) -> None:
    """Make the glyphs100 loader skip rendering: 1x1 black images with the generator's labels
    (class-major, ``n`` per class; those labels are pinned by the image goldens)."""
    import fscil_bench.data.glyphs as glyphs

    def fake(cache_dir, train_per_class, test_per_class, seed=0, log=print):
        def split(n: int) -> ImageArray:
            labels = np.repeat(np.arange(100), n)
            return ImageArray(np.zeros((len(labels), 1, 1, 3), np.uint8), labels)
        return split(train_per_class), split(test_per_class), {}

    monkeypatch.setattr(glyphs, "load_glyphs", fake)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text())


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """``generated(name)``: the benchmark ``name`` rendered into a fresh cache, once per module."""
    cache, loaded = tmp_path_factory.mktemp("glyphs"), {}

    def load(name: str) -> Benchmark:
        if name not in loaded:
            loaded[name] = get_benchmark(name).load(LoadOptions(cache_dir=cache, log=lambda m: None))
        return loaded[name]

    return load


def _golden_entry(golden: dict, section: str, key: str) -> dict:
    if key not in golden[section]:
        pytest.fail(f"no golden digests for {key} in {GOLDEN_FILE.name} [{section}]: a new version needs its own "
                    f"entry (python tests/test_pinned_data.py prints them)")
    return golden[section][key]


@pytest.mark.parametrize("name", GLYPH_VARIANTS)
def test_the_few_shot_picks_of_each_built_in_benchmark_are_pinned(name, golden, monkeypatch, tmp_path):
    labels_only(monkeypatch)
    bench = get_benchmark(name).load(LoadOptions(cache_dir=tmp_path, log=lambda m: None))
    assert picks_digests(bench) == _golden_entry(golden, "picks", bench.id)


@pytest.mark.parametrize("name", shipped_schedules())
def test_the_sessions_of_each_shipped_schedule_are_pinned(name, golden):
    assert shipped_digests(name) == _golden_entry(golden, "shipped_schedules", name)


def test_every_shipped_schedule_has_a_golden(golden):
    assert sorted(golden["shipped_schedules"]) == shipped_schedules() != []


def _check_images(bench: Benchmark, golden: dict) -> None:
    assert data_digests(bench) == _golden_entry(golden, "images", bench.id), (
        f"{bench.id} no longer generates the same images: bump GLYPHS_VERSION")
    assert picks_digests(bench) == _golden_entry(golden, "picks", bench.id)


@pytest.mark.parametrize("name", ["glyphs100-tiny", "glyphs100-small"])
def test_the_generated_images_of_the_small_variants_are_pinned(name, golden, generated):
    _check_images(generated(name), golden)


@pytest.mark.slow
def test_the_generated_images_of_glyphs100_are_pinned(golden, generated):
    _check_images(generated("glyphs100"), golden)


def test_a_changed_image_or_pick_does_not_match_the_golden(golden, generated):
    """The digests see a single changed pixel and a single changed pick."""
    bench = generated("glyphs100-tiny")
    pinned = _golden_entry(golden, "images", bench.id)
    images = np.array(bench.train.images, copy=True)
    images[17, 3, 4, 1] ^= 1
    assert sha256(images) != pinned["train_images"] and sha256(bench.train.images) == pinned["train_images"]
    picks = np.array(bench.schedule.sessions[1].train_indices, dtype=np.int64)
    assert sha256(picks) == picks_digests(bench)[1]
    picks[0] += 1
    assert sha256(picks) != picks_digests(bench)[1]


def compute_goldens(cache: Path) -> dict:
    """Every digest this module pins, computed from the current code (slow: renders glyphs100)."""
    images, picks = {}, {}
    for name in GLYPH_VARIANTS:
        bench = get_benchmark(name).load(LoadOptions(cache_dir=cache, log=lambda m: None))
        images[bench.id], picks[bench.id] = data_digests(bench), picks_digests(bench)
    return {"images": images, "picks": picks, "shipped_schedules": {n: shipped_digests(n) for n in shipped_schedules()}}


if __name__ == "__main__":  # print the digests of the current code, to record a new version's
    print(json.dumps(compute_goldens(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".cache")), indent=1))
