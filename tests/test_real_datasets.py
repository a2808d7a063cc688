"""The real-data benchmarks (CIFAR-100, miniImageNet, CUB-200) on tiny fixtures in their exact
on-disk formats, custom ImageFolder benchmarks, the image cache, and ``fscil-bench data verify``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from real_data_fixtures import (
    NearestMean,
    cifar_lists,
    class_image,
    cub_lists,
    mini_lists,
    save_jpeg,
    write_cifar,
    write_cub,
    write_mini,
)

from fscil_bench.benchmarks import (
    BenchmarkError,
    LoadOptions,
    benchmark_names,
    get_benchmark,
)
from fscil_bench.benchmarks.real import (
    CIFAR100_NORM,
    IMAGENET_NORM,
    REAL_BENCHMARKS,
    load_real_benchmark,
)
from fscil_bench.cli import main
from fscil_bench.data import image_files
from fscil_bench.data.families import build_schedule
from fscil_bench.data.image_files import DatasetError
from fscil_bench.run.runner import RunOptions, run_method
from fscil_bench.schedules.files import write_schedule_file


def options(tmp_path: Path, data_root: Path, logs: list | None = None) -> LoadOptions:
    return LoadOptions(cache_dir=tmp_path / "cache", data_root=data_root,
                       log=(logs.append if logs is not None else (lambda m: None)))


def tiny_schedule(tmp_path: Path, lists: Path, fmt: str, **kwargs) -> Path:
    return write_schedule_file(build_schedule(lists, fmt, name=f"tiny-{fmt}", log=lambda m: None, **kwargs),
                               tmp_path / f"tiny-{fmt}.json")


def run(bench, tmp_path: Path):
    result = run_method(bench, NearestMean, "quick", 0, RunOptions(cache_dir=tmp_path / "runcache", eval_batch_size=16,
                                                                   log=lambda m: None, isolation="none"))
    assert result.status == "completed", result.error
    return result


# --- fixtures in each format, through a short FSCIL schedule ---------------------------------------


@pytest.fixture
def cifar(tmp_path):
    data = tmp_path / "data"
    arrays = write_cifar(data, num_classes=6, train_per_class=8, test_per_class=4)
    lists = cifar_lists(tmp_path / "lists", arrays["train"][1], base=2, ways=2, shots=3)
    sched = tiny_schedule(tmp_path, lists, "cifar100", num_classes=6, base_classes=2, train_per_class=8, test_per_class=4)
    return data, arrays, sched


@pytest.fixture
def mini(tmp_path):
    data = tmp_path / "data"
    info = write_mini(data, num_classes=6, train_per_class=6, test_per_class=3)
    lists = mini_lists(tmp_path / "lists", info, base=2, ways=2, shots=2)
    return data, info, tiny_schedule(tmp_path, lists, "mini_imagenet")


@pytest.fixture
def cub(tmp_path):
    data = tmp_path / "data"
    info = write_cub(data, num_classes=6, train_per_class=5, test_per_class=3)
    lists = cub_lists(tmp_path / "lists", info, base=2, ways=2, shots=2)
    return data, info, tiny_schedule(tmp_path, lists, "cub200")


def test_cifar_fixture_runs_through_its_sessions(tmp_path, cifar):
    data, arrays, sched = cifar
    bench = load_real_benchmark("cifar100", options(tmp_path, data), schedule=sched)
    assert bench.id == "cifar100@1" and bench.family == "cifar100"
    train_images, train_labels = arrays["train"]
    assert np.array_equal(bench.train.images, train_images)  # CHW rows -> HWC, in pickle order
    assert np.array_equal(bench.train.labels, train_labels)
    s = bench.schedule
    assert [len(x.train_indices) for x in s.sessions] == [16, 6, 6] and s.class_groups() == [(0, 2), (2, 4), (4, 6)]
    assert set(s.sessions[0].train_indices.tolist()) == set(np.flatnonzero(train_labels < 2).tolist())
    result = run(bench, tmp_path)
    assert [len(p) for p in result.predictions] == [8, 16, 24]
    assert result.metrics["last"] > 0.9


def test_cifar_pickles_written_by_python_3_are_read_too(tmp_path, cifar):
    """Pickles re-saved from Python 3 have ``str`` keys (torchvision reads both kinds)."""
    import pickle

    data, arrays, sched = cifar
    for name in ("train", "test", "meta"):
        path = data / "cifar-100-python" / name
        obj = pickle.loads(path.read_bytes())
        path.write_bytes(pickle.dumps({k.decode(): v for k, v in obj.items()}))
    bench = load_real_benchmark("cifar100", options(tmp_path, data), schedule=sched)
    assert np.array_equal(bench.test.images, arrays["test"][0]) and np.array_equal(bench.test.labels, arrays["test"][1])


def test_mini_fixture_runs_and_a_second_load_decodes_nothing(tmp_path, mini, monkeypatch):
    data, info, sched = mini
    logs: list[str] = []
    bench = load_real_benchmark("mini_imagenet", options(tmp_path, data, logs), schedule=sched)
    assert bench.train.images.shape == (36, 84, 84, 3) and bench.test.images.shape == (18, 84, 84, 3)
    assert any("decoding 36 mini_imagenet train images" in m for m in logs)
    assert [s.shots for s in bench.schedule.sessions] == [None, 2, 2]
    x = bench.eval_transform(torch.from_numpy(np.ascontiguousarray(bench.test.images[:2])), None)
    assert x.shape == (2, 3, 84, 84)
    assert run(bench, tmp_path).metrics["last"] > 0.9

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image although the cache holds them")

    monkeypatch.setattr(image_files, "decode_image", no_decoding)
    again = load_real_benchmark("mini_imagenet", options(tmp_path, data), schedule=sched)
    assert isinstance(again.train.images, np.memmap)
    assert np.array_equal(np.asarray(again.train.images), np.asarray(bench.train.images))


def test_cub_fixture_runs_with_class_ids_from_folder_numbers(tmp_path, cub):
    data, info, sched = cub
    bench = load_real_benchmark("cub200", options(tmp_path, data), schedule=sched)
    assert bench.train.images.shape == (30, 256, 256, 3) and bench.test.images.shape == (18, 256, 256, 3)
    assert sorted(set(bench.train.labels.tolist())) == list(range(6))
    base = bench.schedule.sessions[0]
    assert base.ways == 2 and sorted(base.train_indices.tolist()) == np.flatnonzero(bench.train.labels < 2).tolist()
    assert [s.shots for s in bench.schedule.sessions] == [None, 2, 2]
    assert bench.train_transform(torch.from_numpy(bench.train.images[:2].copy()), torch.Generator()).shape == (2, 3, 224, 224)
    assert bench.eval_transform(torch.from_numpy(bench.test.images[:2].copy()), None).shape == (2, 3, 224, 224)
    assert run(bench, tmp_path).metrics["last"] > 0.9


def test_a_corrupted_image_cache_is_detected_and_rebuilt(tmp_path, mini):
    data, info, sched = mini
    first = load_real_benchmark("mini_imagenet", options(tmp_path, data), schedule=sched)
    expected = np.array(first.test.images)
    (cached,) = (tmp_path / "cache" / "datasets" / "mini_imagenet").glob("test-84px-*.npy")
    del first
    raw = bytearray(cached.read_bytes())
    raw[-100] ^= 0xFF
    cached.write_bytes(bytes(raw))
    logs: list[str] = []
    again = load_real_benchmark("mini_imagenet", options(tmp_path, data, logs), schedule=sched)
    assert any("failed their checksum; decoding them again" in m for m in logs)
    assert np.array_equal(np.asarray(again.test.images), expected)


# --- clear messages for broken data ------------------------------------------------------------


def test_a_truncated_pickle_names_the_file(tmp_path, cifar):
    data, _, sched = cifar
    train = data / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])
    with pytest.raises(BenchmarkError) as err:
        load_real_benchmark("cifar100", options(tmp_path, data), schedule=sched)
    assert f"cannot read CIFAR-100 file {train}: truncated or not a CIFAR-100 pickle" in str(err.value)
    assert "cs.toronto.edu" in str(err.value)


def test_a_pickle_of_the_wrong_shape_names_the_file(tmp_path, cifar):
    data, _, sched = cifar
    test = data / "cifar-100-python" / "test"
    with open(test, "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"fine_labels": [0] * 4}, f)
    with pytest.raises(BenchmarkError, match=r"file .*test: 'data' should be a uint8 array \(N, 3072\)"):
        load_real_benchmark("cifar100", options(tmp_path, data), schedule=sched)


def test_a_missing_image_names_the_file(tmp_path, mini, cub):
    data, info, sched = mini
    gone = info["folder"] / "images" / info["test"][4][0]
    gone.unlink()
    with pytest.raises(BenchmarkError) as err:
        load_real_benchmark("mini_imagenet", options(tmp_path, data), schedule=sched)
    assert f"1 of the 18 images listed in {info['folder'] / 'split' / 'test.csv'} are missing: {gone}" in str(err.value)

    data, info, sched = cub
    rel = info["train_by_class"][3][0]
    (info["folder"] / "images" / rel).unlink()
    with pytest.raises(BenchmarkError, match=f"images listed in .*images.txt are missing: .*{rel}"):
        load_real_benchmark("cub200", options(tmp_path, data), schedule=sched)


def test_an_undecodable_image_names_the_file(tmp_path, cub):
    data, info, sched = cub
    bad = info["folder"] / "images" / info["train_by_class"][2][1]
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(BenchmarkError, match=f"cannot decode image {bad}"):
        load_real_benchmark("cub200", options(tmp_path, data), schedule=sched)


def test_a_csv_naming_an_unknown_class_names_the_file(tmp_path, mini):
    data, info, sched = mini
    test_csv = info["folder"] / "split" / "test.csv"
    lines = test_csv.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",n09999999"
    test_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkError) as err:
        load_real_benchmark("mini_imagenet", options(tmp_path, data), schedule=sched)
    assert f"miniImageNet split file {test_csv} line 4 names class 'n09999999'" in str(err.value)

    # a train.csv with a class the schedule does not know
    train_csv = info["folder"] / "split" / "train.csv"
    test_csv.write_text("\n".join(lines[:3]) + "\n")
    train_csv.write_text(train_csv.read_text() + "n0999999900000001.jpg,n09999999\n")
    save_jpeg(info["folder"] / "images" / "n0999999900000001.jpg", class_image(0, 84, 84, np.random.default_rng(0)))
    with pytest.raises(BenchmarkError) as err:
        load_real_benchmark("mini_imagenet", options(tmp_path, data), schedule=sched)
    assert f"file {train_csv} has samples of class 'n09999999'" in str(err.value)
    assert "which the schedule" in str(err.value)


def test_a_cub_index_that_disagrees_names_the_file(tmp_path, cub):
    data, info, sched = cub
    labels = info["folder"] / "image_class_labels.txt"
    lines = labels.read_text().splitlines()
    lines[0] = "1 7"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkError, match=f"CUB-200-2011 file {labels}: image 1 has class '7' but lives in folder 001"):
        load_real_benchmark("cub200", options(tmp_path, data), schedule=sched)


def test_the_shipped_schedule_on_other_data_says_the_data_differs(tmp_path, cifar):
    data, _, _ = cifar
    with pytest.raises(BenchmarkError, match=r"session 0 holds all 30000 training samples of classes 0-59 .* has 48"):
        load_real_benchmark("cifar100", options(tmp_path, data))


def test_running_a_real_benchmark_without_its_data_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FSCIL_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FSCIL_DATA_ROOT", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    for bench, layout, source in [
        ("cifar100", f"{empty}/cifar-100-python/{{train,test,meta}}", "https://www.cs.toronto.edu/~kriz/cifar.html"),
        ("mini_imagenet", f"{empty}/miniimagenet/images/<file>.jpg", "image-net.org"),
        ("cub200", f"{empty}/CUB_200_2011/{{images.txt", "https://www.vision.caltech.edu/datasets/cub_200_2011/"),
    ]:
        code = main(["run", "--benchmark", bench, "--data-root", str(empty), "--output", str(tmp_path / "runs")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("error: ") and "not found: expected" in err[0] and layout in err[0] and source in err[0]
        assert "Traceback" not in err[0]
    code = main(["run", "--benchmark", "cub200", "--output", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs the CUB-200-2011 data set: pass --data-root DIR (or set FSCIL_DATA_ROOT)" in err


# --- registration, transforms ------------------------------------------------------------------


def test_the_real_benchmarks_are_registered_with_the_standard_transforms():
    for name in ("cifar100", "mini_imagenet", "cub200"):
        assert name in benchmark_names()
        spec = get_benchmark(f"{name}@1")
        assert spec.family == name and spec.version == 1
    cifar, mini, cub = REAL_BENCHMARKS["cifar100"], REAL_BENCHMARKS["mini_imagenet"], REAL_BENCHMARKS["cub200"]
    assert cifar.train_transform.norm == CIFAR100_NORM == cifar.eval_transform.norm
    assert CIFAR100_NORM.mean == (0.5071, 0.4867, 0.4408) and CIFAR100_NORM.std == (0.2675, 0.2565, 0.2761)
    assert mini.eval_transform.norm == IMAGENET_NORM == cub.train_transform.norm
    assert IMAGENET_NORM.mean == (0.485, 0.456, 0.406) and IMAGENET_NORM.std == (0.229, 0.224, 0.225)
    g = torch.Generator().manual_seed(0)
    for spec, stored, size in ((cifar, 32, 32), (mini, 84, 84), (cub, 256, 224)):
        assert spec.reader.stored_size == stored
        raw = torch.randint(0, 256, (3, stored, stored, 3), dtype=torch.uint8)
        assert spec.train_transform(raw, g).shape == (3, 3, size, size)
        assert spec.eval_transform(raw, None).shape == (3, 3, size, size)
    assert (cifar.train_transform.padding, mini.eval_transform.resize_to, mini.eval_transform.crop) == (4, 92, 84)
    assert (cub.eval_transform.resize_to, cub.eval_transform.crop) == (256, 224)


# --- fscil-bench data verify ------------------------------------------------------------------


def test_data_verify_passes_a_good_data_set_and_explains_a_bad_one(tmp_path, mini, capsys):
    data, info, sched = mini
    assert main(["data", "verify", "--benchmark", "mini_imagenet", "--data-root", str(data), "--schedule", str(sched)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "FAIL" not in out
    assert "test images after each session: 6, 12, 18" in out

    # against the shipped schedule: wrong counts and classes, said plainly
    assert main(["data", "verify", "--benchmark", "mini_imagenet", "--data-root", str(data)]) == 2
    out = capsys.readouterr().out
    assert "FAIL" in out and "sessions/mini_imagenet.json" in out and "check(s) failed" in out

    (info["folder"] / "images" / info["train"][0][0]).unlink()
    assert main(["data", "verify", "-b", "mini_imagenet", "--data-root", str(data), "--schedule", str(sched)]) == 2
    out = capsys.readouterr().out
    assert f"FAIL  files        1 of the 36 images listed in {info['folder'] / 'split' / 'train.csv'} are missing" in out


def test_data_verify_reports_a_missing_data_set_with_its_source(tmp_path, capsys):
    assert main(["data", "verify", "--benchmark", "cifar100", "--data-root", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f"CIFAR-100 not found: expected {tmp_path}/cifar-100-python/{{train,test,meta}}" in out
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in out
    assert main(["data", "verify", "--benchmark", "nope", "--data-root", str(tmp_path)]) == 2
    assert "error: 'data verify' checks the real data sets" in capsys.readouterr().err


def test_data_verify_checks_cifar_and_cub_fixtures(tmp_path, cifar, capsys):
    data, _, sched = cifar
    assert main(["data", "verify", "-b", "cifar100", "--data-root", str(data), "--schedule", str(sched)]) == 0
    assert "all checks passed" in capsys.readouterr().out
    cub_root = tmp_path / "cubdata"
    info = write_cub(cub_root, num_classes=4, train_per_class=5, test_per_class=3)
    lists = cub_lists(tmp_path / "cublists", info, base=2, ways=1, shots=2)
    cub_sched = write_schedule_file(build_schedule(lists, "cub200", log=lambda m: None), tmp_path / "cub.json.gz")
    assert main(["data", "verify", "-b", "cub200", "--data-root", str(cub_root), "--schedule", str(cub_sched)]) == 0
    out = capsys.readouterr().out
    assert "the base session lists all 10 training images of classes 0-1" in out


# --- custom benchmarks ------------------------------------------------------------------------


def write_image_folder(root: Path, classes: list[str], train: int, test: int) -> None:
    rng = np.random.default_rng(1)
    from PIL import Image

    for c, name in enumerate(classes):
        for split, n in (("train", train), ("test", test)):
            for k in range(n):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                image = class_image(c, 30 + 4 * (k % 3), 40, rng)
                if k % 2:
                    Image.fromarray(image).save(folder / f"img{k}.png")
                else:
                    save_jpeg(folder / f"img{k}.JPG", image)


PIXEL_MEANS_PLUGIN = """
import torch
import torch.nn.functional as F
from fscil_bench import MethodBase


class PixelMeans(MethodBase):
    name = "pixel-means"
    presets = {"quick": {}}

    def fit_base(self, session, ctx):
        self.means = []
        self.fit_session(session, ctx)

    def fit_session(self, session, ctx):
        x, y = next(session.train.batches(len(session.train), augment=False))
        self.means += [x[y == c].flatten(1).mean(0) for c in session.new_classes]

    def predict(self, images):
        return F.normalize(images.flatten(1), dim=1) @ F.normalize(torch.stack(self.means), dim=1).T
"""


def test_a_yaml_image_folder_benchmark_runs_from_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FSCIL_BENCH_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "shapes", ["zeta", "alpha", "mid", "beta", "gamma", "delta"], train=6, test=3)
    yaml_file = tmp_path / "bench" / "shapes.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text("name: shapes-fscil\nversion: 2\nroot: ../shapes\nbase_classes: 2\nways: 2\nshots: 3\nseed: 7\n"
                         "class_order: [zeta, alpha, mid, beta, gamma, delta]\nimage_size: 24\naugment: crop_flip\n")
    spec = get_benchmark(str(yaml_file))
    assert spec.id == "shapes-fscil@2"
    bench = spec.load(options(tmp_path, None))
    assert bench.train.images.shape == (36, 24, 24, 3)
    assert bench.manifest["classes"][:2] == ["zeta", "alpha"] and bench.schedule.class_groups() == [(0, 2), (2, 4), (4, 6)]
    assert [len(s.train_indices) for s in bench.schedule.sessions] == [12, 6, 6]

    runs = tmp_path / "runs"
    plugin = tmp_path / "pixel_means.py"
    plugin.write_text(PIXEL_MEANS_PLUGIN)
    code = main(["run", "--benchmark", str(yaml_file), "--plugin", str(plugin),
                 "--methods", "pixel-means", "--output", str(runs)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((runs / "shapes-fscil@2" / "pixel-means" / "quick" / "seed-0" / "record.json").read_text())
    assert record["status"] == "completed" and record["benchmark"]["version"] == 2
    assert record["metrics"]["last"] > 0.9

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase_classes: 2\nways: 2\n")
    with pytest.raises(BenchmarkError, match=f"benchmark file {bad}: missing 'shots'"):
        get_benchmark(str(bad))


def test_a_yaml_can_run_a_real_data_set_with_a_schedule_of_ones_own(tmp_path, cifar):
    data, _, sched = cifar
    yaml_file = tmp_path / "mine.yml"
    yaml_file.write_text(f"name: cifar-mine\ndataset: cifar100\nschedule: {sched.name}\nroot: data\n")
    spec = get_benchmark(str(yaml_file))
    assert spec.id == "cifar-mine@1" and spec.family == "cifar100"
    bench = spec.load(options(tmp_path, None))
    assert bench.name == "cifar-mine" and len(bench.schedule) == 3
    run(bench, tmp_path)


def test_loading_and_data_verify_ask_the_same_family_object(tmp_path, monkeypatch, capsys):
    """A dataset family owns its steps: loading a benchmark and ``data verify`` both call it."""
    from fscil_bench.data.families import get_family

    family = get_family("cub200")
    calls = []

    def index(folder):
        calls.append(folder)
        raise DatasetError(f"sentinel: cannot index {folder}")

    monkeypatch.setattr(family, "index", index)
    write_cub(tmp_path / "data", num_classes=4, train_per_class=5, test_per_class=3)
    with pytest.raises(BenchmarkError, match="sentinel: cannot index"):
        load_real_benchmark("cub200", LoadOptions(cache_dir=tmp_path / "cache", data_root=tmp_path / "data"))
    assert main(["data", "verify", "-b", "cub200", "--data-root", str(tmp_path / "data")]) == 2
    assert "FAIL  index        sentinel: cannot index" in capsys.readouterr().out
    assert len(calls) == 2
