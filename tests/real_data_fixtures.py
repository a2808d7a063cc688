"""Tiny data sets in the exact on-disk formats of CIFAR-100, miniImageNet and CUB-200-2011, with
index lists in the standard FSCIL format, for the tests.

Class ``c`` images are a flat colour specific to the class plus noise, so a nearest-mean method
separates them; image sizes vary where the real data sets' do.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fscil_bench import MemoryDeclaration, MethodBase

CLASS_COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [220, 220, 40], [220, 40, 220],
                          [40, 220, 220], [240, 240, 240], [20, 20, 20], [140, 70, 0], [0, 90, 150]], dtype=np.int16)


def class_image(c: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.integers(-25, 26, size=(h, w, 3))
    return np.clip(CLASS_COLOURS[c % len(CLASS_COLOURS)] + noise, 0, 255).astype(np.uint8)


def save_jpeg(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)


def write_sums(root: Path, files: list[Path]) -> None:
    """``root/SHA256SUMS`` in sha256sum format, paths as ``./<relative>``."""
    lines = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  ./{f.relative_to(root)}" for f in files]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def write_lists(lists_root: Path, fmt: str, sessions: list[list[str]], extra: dict[str, str] | None = None) -> Path:
    """``lists_root/<fmt>/session_N.txt`` (+ extra files) and ``lists_root/SHA256SUMS``."""
    folder = lists_root / fmt
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for t, lines in enumerate(sessions, start=1):
        path = folder / f"session_{t}.txt"
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)
        files.append(folder / name)
    write_sums(lists_root, files)
    return folder


def pick_shots(ids_by_class: dict[int, list], classes: range, shots: int) -> list:
    return [sid for c in classes for sid in ids_by_class[c][:shots]]


# --- CIFAR-100 ----------------------------------------------------------------------------------


def write_cifar(data_root: Path, num_classes: int = 6, train_per_class: int = 8, test_per_class: int = 4,
                seed: int = 0) -> dict:
    """``data_root/cifar-100-python/{train,test,meta}`` as torchvision's pickles; training images
    in shuffled class order, as in the real file."""
    rng = np.random.default_rng(seed)
    folder = data_root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
        images = np.stack([class_image(int(c), 32, 32, rng) for c in labels])
        data = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # rows of R, G, B planes
        obj = {b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))], b"batch_label": split.encode(),
               b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": data}
        with open(folder / split, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        out[split] = (images, labels)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{c}".encode() for c in range(num_classes)],
                     b"coarse_label_names": [b"group"]}, f, protocol=2)
    return out


def cifar_lists(lists_root: Path, train_labels: np.ndarray, base: int, ways: int, shots: int, rng_seed: int = 0) -> Path:
    rng = np.random.default_rng(rng_seed)
    num_classes = int(train_labels.max()) + 1
    by_class = {c: [int(i) for i in np.flatnonzero(train_labels == c)] for c in range(num_classes)}
    sessions = [[str(i) for i in rng.permutation(np.flatnonzero(train_labels < base))]]
    for start in range(base, num_classes, ways):
        sessions.append([str(i) for i in pick_shots(by_class, range(start, start + ways), shots)])
    return write_lists(lists_root, "cifar100", sessions)


# --- miniImageNet -----------------------------------------------------------------------------


def write_mini(data_root: Path, num_classes: int = 6, train_per_class: int = 6, test_per_class: int = 3,
               seed: int = 0) -> dict:
    """``data_root/miniimagenet/{images/*.jpg, split/{train,test}.csv}``; wnids sorted, as in the real split."""
    rng = np.random.default_rng(seed)
    folder = data_root / "miniimagenet"
    wnids = [f"n0{1000000 + 7919 * c:07d}" for c in range(num_classes)]
    splits = {}
    number = 0
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        rows = []
        for c, wnid in enumerate(wnids):
            for _ in range(per_class):
                number += 1
                name = f"{wnid}{number:08d}.jpg"
                h, w = (84, 84) if number % 3 else (90, 100)  # the release is 84x84; be robust to others
                save_jpeg(folder / "images" / name, class_image(c, h, w, rng))
                rows.append((name, wnid))
        (folder / "split").mkdir(parents=True, exist_ok=True)
        with open(folder / "split" / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            writer.writerows(rows)
        splits[split] = rows
    return {"wnids": wnids, **splits, "folder": folder}


def mini_lists(lists_root: Path, mini: dict, base: int, ways: int, shots: int) -> Path:
    wnids = mini["wnids"]
    by_class: dict[int, list[str]] = {}
    for name, wnid in mini["train"]:
        by_class.setdefault(wnids.index(wnid), []).append(f"MINI-ImageNet/train/{wnid}/{name}")
    sessions = [[p for c in range(base) for p in by_class[c]]]
    for start in range(base, len(wnids), ways):
        sessions.append(pick_shots(by_class, range(start, start + ways), shots))
    split = mini["folder"] / "split"
    extra = {"train.csv": (split / "train.csv").read_text(), "test.csv": (split / "test.csv").read_text()}
    return write_lists(lists_root, "mini_imagenet", sessions, extra)


# --- CUB-200-2011 -----------------------------------------------------------------------------


def write_cub(data_root: Path, num_classes: int = 6, train_per_class: int = 5, test_per_class: int = 3,
              seed: int = 0) -> dict:
    """``data_root/CUB_200_2011/{images.txt, train_test_split.txt, image_class_labels.txt, images/}``."""
    rng = np.random.default_rng(seed)
    folder = data_root / "CUB_200_2011"
    folders = [f"{c + 1:03d}.Bird_{chr(65 + c)}" for c in range(num_classes)]
    images_txt, split_txt, labels_txt = [], [], []
    by_class: dict[int, list[str]] = {}
    image_id = 0
    for c, class_folder in enumerate(folders):
        for k in range(train_per_class + test_per_class):
            image_id += 1
            rel = f"{class_folder}/Bird_{chr(65 + c)}_{k:04d}_{1000 + image_id}.jpg"
            h, w = (48, 64) if k % 2 else (60, 40)
            save_jpeg(folder / "images" / rel, class_image(c, h, w, rng))
            images_txt.append(f"{image_id} {rel}")
            is_train = k % 2 == 0 if k < 2 * test_per_class else True  # interleaved, as in the real split
            split_txt.append(f"{image_id} {int(is_train)}")
            labels_txt.append(f"{image_id} {c + 1}")
            if is_train:
                by_class.setdefault(c, []).append(rel)
    (folder / "images.txt").write_text("\n".join(images_txt) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split_txt) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels_txt) + "\n")
    return {"folders": folders, "train_by_class": by_class, "folder": folder}


def cub_lists(lists_root: Path, cub: dict, base: int, ways: int, shots: int) -> Path:
    by_class = {c: [f"CUB_200_2011/images/{rel}" for rel in rels] for c, rels in cub["train_by_class"].items()}
    sessions = [[p for c in range(base) for p in by_class[c]]]
    for start in range(base, len(cub["folders"]), ways):
        sessions.append(pick_shots(by_class, range(start, start + ways), shots))
    return write_lists(lists_root, "cub200", sessions)


# --- a method for the runs --------------------------------------------------------------------


class NearestMean(MethodBase):
    """Nearest class mean of 4x4 average-pooled, normalised images."""

    name = "test-nearest-mean"
    presets = {"quick": {}}

    @staticmethod
    def embed(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.adaptive_avg_pool2d(x, 4).flatten(1), dim=1)

    def fit_base(self, session, ctx) -> None:
        self.means = torch.empty(0, 48)
        self.fit_session(session, ctx)

    def fit_session(self, session, ctx) -> None:
        feats, labels = [], []
        for x, y in session.train.batches(64, augment=False):
            feats.append(self.embed(x))
            labels.append(y)
        feats, labels = torch.cat(feats), torch.cat(labels)
        means = torch.stack([feats[labels == c].mean(0) for c in session.new_classes])
        self.means = torch.cat([self.means, means])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images) @ F.normalize(self.means, dim=1).T

    def memory(self) -> MemoryDeclaration:
        return MemoryDeclaration(feature_vectors=len(self.means))


def write_yaml_benchmark(folder: Path, name: str = "squares", classes: int = 6, train: int = 8, test: int = 3,
                         seed: int = 0) -> Path:
    """A custom benchmark in ``folder``: ``<name>.yaml`` over an ImageFolder tree of 16 px PNGs in
    ``folder/data`` (class ``c``: a flat class colour plus noise drawn with ``seed``), 2 base
    classes then 2-way 3-shot sessions. Returns the YAML file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        for split, n in (("train", train), ("test", test)):
            target = folder / "data" / split / f"class{c}"
            target.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(class_image(c, 16, 16, rng)).save(target / f"img{k}.png")
    yaml_file = folder / f"{name}.yaml"
    yaml_file.write_text(f"name: {name}\nroot: data\nbase_classes: 2\nways: 2\nshots: 3\nimage_size: 16\n"
                         "augment: crop_flip\n")
    return yaml_file
