"""The built-in glyphs100 data set: class list, font coverage, determinism, streams, cache."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from fscil_bench.data import glyph_classes as classes_module
from fscil_bench.data import glyph_render, glyphs
from fscil_bench.data.arrays import ImageArray
from fscil_bench.data.glyph_classes import (
    available_fonts,
    glyph_class_names,
    glyph_classes,
)
from fscil_bench.data.glyphs import GLYPHS_VERSION, generate_glyphs, load_glyphs

# Groups of characters with the same shape in at least one of the fonts (up to scale, case or a
# small rotation); the class list may hold at most one of each.
LOOKALIKES = [
    "0OoОоΟοΘθѲӨ", "1lIІӀ|ι", "AΑА", "BΒВв", "CcСсϹϲ", "EΕЕ", "HΗНн", "KΚКкkκ", "MΜМм", "NΝ",
    "PΡРрpρ", "TΤТт", "XΧХхxχ", "YΥҮ", "yуγ", "ZΖz", "ΓГг", "ΠПпπ", "ΦФф", "ΨψѰ", "bЬь", "aа", "eе",
    "sSЅѕ", "uUυ", "vVνѴ", "wWѡ", "ШшЩщ", "ЂЋ", "ßβ", "ЗзƷ3", "6б", "jJ", "ИЙ", "ЦҴ", "QϘ",
]
# Left-right mirror images: the benchmark's training augmentation flips images.
MIRRORS = ["bd", "pq", "NИ", "RЯ", "ЭЄ", "3εƐ"]


def script(char: str) -> str:
    if char.isdigit():
        return "digit"
    return unicodedata.name(char).split()[0].lower()


@pytest.fixture(scope="module")
def small() -> tuple[ImageArray, ImageArray, dict]:
    return generate_glyphs(6, 4, seed=0)


def test_one_hundred_distinct_characters_with_names():
    chars = glyph_classes()
    assert len(chars) == 100 and len(set(chars)) == 100
    assert all(len(c) == 1 for c in chars)
    names = glyph_class_names()
    assert len(set(names)) == 100
    assert all(n == n.strip() and n for n in names)
    by_char = dict(zip(chars, names))
    assert by_char["3"] == "digit 3"
    assert by_char["G"] == "latin capital G"
    assert by_char["λ"] == "greek small lambda"
    assert by_char["Ж"] == "cyrillic capital zhe"


def test_no_two_lookalikes_or_mirror_images():
    chars = set(glyph_classes())
    for group in LOOKALIKES + MIRRORS:
        present = [c for c in group if c in chars]
        assert len(present) <= 1, f"look-alikes in the class list: {present}"


def test_scripts_are_interleaved_across_base_and_incremental_classes():
    scripts = [script(c) for c in glyph_classes()]
    assert set(scripts) == {"digit", "latin", "greek", "cyrillic"}
    for part in (scripts[:60], scripts[60:], scripts[60:80], scripts[80:]):
        assert set(part) == {"digit", "latin", "greek", "cyrillic"}
    # no long run of a single script
    longest = run = 1
    for previous, current in zip(scripts, scripts[1:]):
        run = run + 1 if current == previous else 1
        longest = max(longest, run)
    assert longest <= 3


def test_fonts_exist_and_cover_every_class():
    fonts = available_fonts()
    assert len(fonts) == 16 and all(p.is_file() for p in fonts)
    assert not any("Display" in p.name or "NonUni" in p.name or "Siz" in p.name for p in fonts)
    from fontTools.ttLib import TTFont

    cmaps = {p.name: set(TTFont(p)["cmap"].getBestCmap()) for p in fonts}
    for char in glyph_classes():
        covering = [name for name, cmap in cmaps.items() if ord(char) in cmap]
        assert len(covering) >= 4, (char, covering)
        assert classes_module.fonts_for(char) == [p.name for p in fonts if p.name in covering]


def test_masks_are_centred_and_distinct_per_class():
    folder = available_fonts()[0].parent
    means = []
    for char in glyph_classes():
        masks = np.stack([classes_module.render_mask(char, folder / name) for name in classes_module.fonts_for(char)])
        assert masks.max() > 0.9
        ys, xs = np.nonzero(masks.mean(0) > 0.05)
        assert abs((ys.min() + ys.max()) / 2 - classes_module.MASK_RES / 2) < 4
        assert abs((xs.min() + xs.max()) / 2 - classes_module.MASK_RES / 2) < 4
        means.append(masks.mean(0).ravel())
    means = np.stack(means)
    dists = np.sqrt(((means[:, None] - means[None]) ** 2).sum(-1))
    np.fill_diagonal(dists, np.inf)
    assert dists.min() > 1.0  # every class's average glyph differs from every other's


def test_shapes_dtypes_and_labels(small):
    train, test, manifest = small
    assert train.images.shape == (600, 32, 32, 3) and test.images.shape == (400, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(100), 6))
    np.testing.assert_array_equal(test.labels, np.repeat(np.arange(100), 4))
    assert np.bincount(test.labels).tolist() == [4] * 100


def test_manifest(small):
    _, _, manifest = small
    json.loads(json.dumps(manifest))
    assert manifest["version"] == GLYPHS_VERSION
    assert (manifest["seed"], manifest["train_per_class"], manifest["test_per_class"]) == (0, 6, 4)
    assert [c["char"] for c in manifest["classes"]] == glyph_classes()
    for i, entry in enumerate(manifest["classes"]):
        assert entry["class_id"] == i
        assert entry["codepoint"] == f"U+{ord(entry['char']):04X}"
        assert entry["name"] == glyph_class_names()[i]
        assert len(entry["fonts"]) >= 4
    assert manifest["parameters"]["rotation_deg"] == glyph_render.ROTATION_DEG


def test_images_are_not_blank(small):
    train, test, _ = small
    for images in (train.images, test.images):
        std = images.reshape(len(images), -1).astype(np.float32).std(1)
        assert std.min() > 8
        assert len(np.unique(images.reshape(len(images), -1), axis=0)) == len(images)


def test_deterministic_in_seed(small):
    train, test, _ = small
    again_train, again_test, _ = generate_glyphs(6, 4, seed=0)
    assert again_train.images.tobytes() == train.images.tobytes()
    assert again_test.images.tobytes() == test.images.tobytes()
    other_train, other_test, _ = generate_glyphs(6, 4, seed=1)
    assert (other_train.images != train.images).mean() > 0.5
    assert (other_test.images != test.images).mean() > 0.5


def test_splits_are_independent_and_smaller_sizes_are_prefixes(small):
    train, test, _ = small
    fewer_train, same_test, _ = generate_glyphs(2, 4, seed=0)
    np.testing.assert_array_equal(same_test.images, test.images)
    np.testing.assert_array_equal(fewer_train.images.reshape(100, 2, 32, 32, 3),
                                  train.images.reshape(100, 6, 32, 32, 3)[:, :2])
    same_train, more_test, _ = generate_glyphs(6, 14, seed=0)  # two random-stream chunks per class
    np.testing.assert_array_equal(same_train.images, train.images)
    np.testing.assert_array_equal(more_test.images.reshape(100, 14, 32, 32, 3)[:, :4],
                                  test.images.reshape(100, 4, 32, 32, 3))
    # the two splits do not repeat each other
    assert (train.images.reshape(100, 6, -1)[:, :4] != test.images.reshape(100, 4, -1)).mean() > 0.5


def test_progress_and_other_sizes():
    calls = []
    train, test, manifest = generate_glyphs(1, 1, seed=3, size=24, progress=lambda d, t: calls.append((d, t)))
    assert train.images.shape == (100, 24, 24, 3) and test.images.shape == (100, 24, 24, 3)
    assert manifest["size"] == 24
    assert calls[-1] == (200, 200)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_learnable_but_not_trivial():
    """Nearest class mean on a colour-blind view of the raw pixels, 10 classes (chance: 10%)."""
    train, test, _ = generate_glyphs(50, 20, seed=0)
    classes = np.arange(0, 100, 10)

    def features(data: ImageArray) -> tuple[np.ndarray, np.ndarray]:
        keep = np.isin(data.labels, classes)
        x = data.images[keep].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        border = np.concatenate([x[:, :2].reshape(len(x), -1), x[:, -2:].reshape(len(x), -1),
                                 x[:, :, :2].reshape(len(x), -1), x[:, :, -2:].reshape(len(x), -1)], 1)
        x = np.abs(x - np.median(border, 1)[:, None, None])  # ink of either polarity
        x = x.reshape(len(x), 16, 2, 16, 2).mean((2, 4)).reshape(len(x), -1)
        x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
        return x, data.labels[keep]

    xtr, ytr = features(train)
    xte, yte = features(test)
    means = np.stack([xtr[ytr == c].mean(0) for c in classes])
    pred = classes[((xte[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    accuracy = (pred == yte).mean()
    assert 0.2 < accuracy < 0.9, accuracy


def test_cache_round_trip(tmp_path: Path, monkeypatch):
    logs: list[str] = []
    train, test, manifest = load_glyphs(tmp_path, 2, 1, seed=5, log=logs.append)
    folder = tmp_path / f"glyphs100-v{GLYPHS_VERSION}-s5-2x1"
    assert (folder / "data.npz").is_file() and (folder / "manifest.json").is_file()
    assert (folder / "data.npz.sha256").is_file()
    assert any("generating" in line for line in logs)
    assert json.loads((folder / "manifest.json").read_text()) == manifest

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached data set")

    monkeypatch.setattr(glyphs, "generate_glyphs", fail)
    logs.clear()
    train2, test2, manifest2 = load_glyphs(tmp_path, 2, 1, seed=5, log=logs.append)
    assert logs == []
    np.testing.assert_array_equal(train2.images, train.images)
    np.testing.assert_array_equal(test2.labels, test.labels)
    assert manifest2 == manifest


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> tuple[Path, ImageArray]:
    """A cache folder with glyphs100 at 1 + 1 per class, seed 2."""
    root = tmp_path_factory.mktemp("glyph-cache")
    train, _, _ = load_glyphs(root, 1, 1, seed=2, log=lambda m: None)
    return root, train


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-sidecar", "no-manifest", "bad-manifest", "wrong-manifest"])
def test_corrupted_cache_is_detected_and_rebuilt(cached, tmp_path: Path, damage: str):
    root, train = cached
    name = f"glyphs100-v{GLYPHS_VERSION}-s2-1x1"
    shutil.copytree(root / name, tmp_path / name)
    folder = tmp_path / name
    data = folder / "data.npz"
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:1000])
    elif damage == "no-sidecar":
        (folder / "data.npz.sha256").unlink()
    elif damage == "no-manifest":
        (folder / "manifest.json").unlink()
    elif damage == "bad-manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["version"] = GLYPHS_VERSION + 1
        (folder / "manifest.json").write_text(json.dumps(manifest))
    logs: list[str] = []
    rebuilt, _, _ = load_glyphs(tmp_path, 1, 1, seed=2, log=logs.append)
    assert any(f"cache at {folder} is corrupted" in line and "regenerating" in line for line in logs), logs
    if damage in ("flip", "truncate"):
        assert any("corrupted (checksum mismatch)" in line for line in logs), logs
    np.testing.assert_array_equal(rebuilt.images, train.images)
    logs.clear()
    again, _, _ = load_glyphs(tmp_path, 1, 1, seed=2, log=logs.append)
    assert logs == []
    np.testing.assert_array_equal(again.images, train.images)
