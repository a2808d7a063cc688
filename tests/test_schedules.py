"""Schedule files: the shipped real-benchmark schedules, the builder that makes them from the
standard index lists, and mapping sample ids onto a training pool."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from real_data_fixtures import write_lists

from fscil_bench.data.families import build_schedule
from fscil_bench.schedules.files import (
    ScheduleFileError,
    ids_checksum,
    read_schedule_file,
    shipped_schedules,
    write_schedule_file,
)
from fscil_bench.schedules.lists import IndexListError

REPO = Path(__file__).resolve().parent.parent


def standard_lists() -> Path | None:
    """The standard index lists: ``$FSCIL_INDEX_LISTS``, else ``../shared/data/index_list`` beside the checkout."""
    env = os.environ.get("FSCIL_INDEX_LISTS")
    for candidate in ([Path(env)] if env else []) + [Path(__file__).parents[2] / "shared" / "data" / "index_list"]:
        if (candidate / "SHA256SUMS").is_file():
            return candidate
    return None


needs_lists = pytest.mark.skipif(standard_lists() is None, reason="standard index lists not found (set FSCIL_INDEX_LISTS "
                                 "to the index_list folder, or put it at ../shared/data/index_list)")


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# --- the shipped schedules: the standard protocols -------------------------------------------------


def test_shipped_schedules_are_the_three_real_benchmarks():
    assert {"cifar100", "mini_imagenet", "cub200"} <= set(shipped_schedules())


@pytest.mark.parametrize("name", ["cifar100", "mini_imagenet"])
def test_cifar_and_mini_are_60_base_classes_then_8_sessions_of_5_way_5_shot(name):
    s = read_schedule_file(name)
    assert s.dataset == name and s.num_classes == 100 and len(s.sessions) == 9
    base = s.sessions[0]
    assert (base.first_class, base.ways, base.shots, base.count) == (0, 60, None, 30000)
    assert base.ids is None  # stored as the rule "all training samples of classes 0-59" + count + checksum
    for t, session in enumerate(s.sessions[1:], start=1):
        assert (session.first_class, session.ways, session.shots, session.count) == (55 + 5 * t, 5, 5, 25)
    assert sum(x.count for x in s.sessions[1:]) == 200
    assert s.per_class("train_per_class") == [500] * 100
    assert s.test_counts() == [6000 + 500 * t for t in range(9)]
    assert s.test_counts()[-1] == 10000


def test_cub_is_100_base_classes_then_10_sessions_of_10_way_5_shot():
    s = read_schedule_file("cub200")
    assert s.path.endswith("cub200.json.gz") and s.num_classes == 200 and len(s.sessions) == 11
    base = s.sessions[0]
    assert (base.first_class, base.ways, base.shots, base.count) == (0, 100, None, 3000)
    assert len(set(base.ids)) == 3000 and all(int(i[:3]) <= 100 for i in base.ids)
    for t, session in enumerate(s.sessions[1:], start=1):
        assert (session.first_class, session.ways, session.shots, session.count) == (90 + 10 * t, 10, 5, 50)
        assert {int(i[:3]) - 1 for i in session.ids} == set(range(90 + 10 * t, 100 + 10 * t))
    assert sum(x.count for x in s.sessions[1:]) == 500
    # the test set grows to the full official test split of all 200 classes
    assert s.expected == {"num_images": 11788, "train_total": 5994, "test_total": 5794}
    assert [s.num_seen(t) for t in range(11)] == list(range(100, 201, 10))
    assert s.class_names[0] == "001.Black_footed_Albatross" and s.class_names[-1].startswith("200.")


@needs_lists
@pytest.mark.parametrize("name", ["cifar100", "mini_imagenet", "cub200"])
def test_shipped_schedules_reproduce_every_sample_of_the_standard_lists(name):
    lists = standard_lists() / name
    s = read_schedule_file(name)
    files = sorted(lists.glob("session_*.txt"), key=lambda p: int(p.stem.split("_")[1]))
    assert len(files) == len(s.sessions)

    def sample_id(line: str):
        if name == "cifar100":
            return int(line)
        parts = line.split("/")
        return parts[-1] if name == "mini_imagenet" else f"{parts[-2]}/{parts[-1]}"

    for path, session in zip(files, s.sessions):
        ids = [sample_id(line) for line in read_list(path)]
        if session.ids is None:
            assert (len(ids), ids_checksum(ids)) == (session.count, session.sha256)
        else:
            assert list(session.ids) == ids, f"{path.name} differs from session {session.index}"
    if name == "mini_imagenet":  # the base rule is exactly train.csv's images of the first 60 classes
        rows = [r.split(",") for r in read_list(lists / "train.csv")[1:]]
        base = {f for f, wnid in rows if s.class_names.index(wnid) < 60}
        assert ids_checksum(sorted(base)) == s.sessions[0].sha256 and len(base) == 30000
        assert s.class_names == list(dict.fromkeys(w for _, w in rows))


@needs_lists
def test_the_build_script_rebuilds_the_shipped_files_byte_for_byte(tmp_path):
    script = load_script()
    assert script.main(["--standard", str(standard_lists()), "--sessions-dir", str(tmp_path)]) == 0
    for name in ("cifar100.json", "mini_imagenet.json", "cub200.json.gz"):
        assert (tmp_path / name).read_bytes() == (REPO / "sessions" / name).read_bytes(), name


# --- building from lists ----------------------------------------------------------------------


def load_script():
    spec = importlib.util.spec_from_file_location("build_schedules", REPO / "scripts" / "build_schedules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_cifar_lists(root: Path) -> Path:
    # 6 classes of 4 training images; class c holds indices c, c + 6, c + 12, c + 18
    base = [str(i) for i in range(24) if i % 6 < 2]
    return write_lists(root, "cifar100", [base, ["2", "8", "3", "9"], ["4", "10", "5", "11"]])


def test_an_index_list_whose_checksum_does_not_match_is_named(tmp_path):
    folder = tiny_cifar_lists(tmp_path / "lists")
    kwargs = dict(num_classes=6, base_classes=2, train_per_class=4, test_per_class=2, log=lambda m: None)
    assert build_schedule(folder, "cifar100", **kwargs).sessions[0].ids is None
    (folder / "session_2.txt").write_text("2\n8\n3\n10\n")
    with pytest.raises(IndexListError) as err:
        build_schedule(folder, "cifar100", **kwargs)
    assert str(err.value).startswith(f"index list {folder / 'session_2.txt'} does not match its checksum in "
                                     f"{tmp_path / 'lists' / 'SHA256SUMS'}")
    # and through the script: one line, exit 2
    script = load_script()
    assert script.main(["--lists", str(folder), "--format", "cifar100", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_lists_without_checksums_are_refused_unless_asked(tmp_path, capsys):
    folder = tiny_cifar_lists(tmp_path / "lists")
    (folder / "session_4.txt").write_text("12\n")
    with pytest.raises(IndexListError, match=r"session_4.txt is not listed in .*SHA256SUMS"):
        build_schedule(folder, "cifar100", num_classes=6, base_classes=2, train_per_class=4)
    (folder / "session_4.txt").unlink()
    (tmp_path / "lists" / "SHA256SUMS").unlink()
    with pytest.raises(IndexListError, match="no SHA256SUMS in"):
        build_schedule(folder, "cifar100", num_classes=6, base_classes=2, train_per_class=4)
    script = load_script()
    out = tmp_path / "mine.json.gz"
    assert script.main(["--lists", str(folder), "--format", "cifar100", "--out", str(out), "--no-checksums",
                        "--num-classes", "6", "--base-classes", "2", "--train-per-class", "4"]) == 0
    assert "wrote" in capsys.readouterr().out
    doc = json.loads(gzip.decompress(out.read_bytes()))
    assert doc["sessions"][1]["samples"]["ids"] == [2, 8, 3, 9] and doc["expected"]["train_per_class"] == 4


def test_a_base_list_that_is_not_every_sample_is_stored_sample_by_sample(tmp_path):
    folder = write_lists(tmp_path / "l", "cifar100", [["0", "1", "6"], ["2", "8"], ["3", "9"]])
    s = build_schedule(folder, "cifar100", num_classes=4, base_classes=2, train_per_class=3, log=lambda m: None)
    assert s.sessions[0].ids == (0, 1, 6) and s.sessions[1].shots == 2


def test_structural_problems_in_lists_are_named(tmp_path):
    folder = write_lists(tmp_path / "a", "cifar100", [["0", "x"], ["2"]])
    with pytest.raises(IndexListError, match=r"session_1.txt line 2: expected an integer index"):
        build_schedule(folder, "cifar100", num_classes=3, base_classes=2, train_per_class=2)
    folder = write_lists(tmp_path / "b", "cub200", [["CUB_200_2011/images/001.A/a.jpg"],
                                                    ["CUB_200_2011/images/002.B/b.jpg", "CUB_200_2011/images/002.B/c.jpg",
                                                     "CUB_200_2011/images/003.C/d.jpg"]])
    with pytest.raises(IndexListError, match=r"session_2.txt holds unequal shots per class: class 1: 2, class 2: 1"):
        build_schedule(folder, "cub200")
    folder = write_lists(tmp_path / "c", "mini_imagenet", [["x/n01/a.jpg"], ["x/n01/b.jpg"]],
                         {"train.csv": "filename,label\na.jpg,n01\nb.jpg,n02\n"})
    with pytest.raises(IndexListError, match=r"session_2.txt line 1: x/n01/b.jpg sits under class folder n01, but .* n02"):
        build_schedule(folder, "mini_imagenet")
    folder = write_lists(tmp_path / "d", "mini_imagenet", [["x/n01/a.jpg"], ["x/n02/z.jpg"]],
                         {"train.csv": "filename,label\na.jpg,n01\nb.jpg,n02\n"})
    with pytest.raises(IndexListError, match=r"session_2.txt line 1: image z.jpg is not in .*train.csv"):
        build_schedule(folder, "mini_imagenet")


# --- reading schedule files and mapping them onto a pool -------------------------------------------


def small_schedule(tmp_path: Path) -> Path:
    folder = write_lists(tmp_path / "m", "mini_imagenet",
                         [["p/n1/a.jpg", "p/n1/b.jpg", "p/n2/c.jpg"], ["p/n3/e.jpg"], ["p/n4/g.jpg"]],
                         {"train.csv": "filename,label\na.jpg,n1\nb.jpg,n1\nc.jpg,n2\ne.jpg,n3\nf.jpg,n3\ng.jpg,n4\n"})
    return write_schedule_file(build_schedule(folder, "mini_imagenet"), tmp_path / "small.json")


def test_load_schedule_file_maps_sample_ids_onto_the_pool(tmp_path):
    path = small_schedule(tmp_path)
    ids = ["g.jpg", "f.jpg", "c.jpg", "a.jpg", "e.jpg", "b.jpg"]  # the pool in another order
    labels = np.array([3, 2, 1, 0, 2, 0])
    schedule = read_schedule_file(path).to_schedule(ids, labels, name="small")
    assert schedule.name == "small" and schedule.num_classes == 4 and schedule.class_groups() == [(0, 2), (2, 3), (3, 4)]
    assert sorted(schedule.sessions[0].train_indices.tolist()) == [2, 3, 5]
    assert schedule.sessions[1].train_indices.tolist() == [4] and schedule.sessions[2].train_indices.tolist() == [0]
    assert read_schedule_file(path).class_names == ["n1", "n2", "n3", "n4"]

    with pytest.raises(ScheduleFileError, match=r"session 2 uses 1 training samples that are not in .*: g.jpg"):
        read_schedule_file(path).to_schedule(ids[1:], labels[1:])
    with pytest.raises(ScheduleFileError, match=r"session 0 holds all 3 training samples of classes 0-1 .* has 2"):
        read_schedule_file(path).to_schedule(ids, np.array([3, 2, 1, 0, 2, 2]))
    with pytest.raises(ScheduleFileError, match=r"does not fit the training data on disk: .*session 1 lists 1 samples of classes outside"):
        read_schedule_file(path).to_schedule(ids, np.array([3, 2, 1, 0, 3, 0]))


def test_a_hand_edited_or_unknown_schedule_file_is_refused(tmp_path):
    path = small_schedule(tmp_path)
    doc = json.loads(path.read_text())
    doc["sessions"][1]["samples"]["ids"] = ["f.jpg"]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    with pytest.raises(ScheduleFileError, match=r"session 1's ids do not match its sha256"):
        read_schedule_file(edited)
    with pytest.raises(ScheduleFileError, match=r"no shipped schedule named 'nope' \(shipped: .*cifar100"):
        read_schedule_file("nope")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ScheduleFileError, match=r"junk.json is not valid JSON"):
        read_schedule_file(tmp_path / "junk.json")
