import numpy as np
import pytest

from fscil_bench.schedules.schedule import Schedule, ScheduleError, SessionSpec


def test_from_class_counts_shapes_like_cifar():
    labels = np.repeat(np.arange(100), 20)
    s = Schedule.from_class_counts("x", labels, 60, 5, 5, np.random.default_rng(0))
    assert len(s) == 9
    assert s.num_base_classes == 60
    assert [s.num_seen(t) for t in range(9)] == [60, 65, 70, 75, 80, 85, 90, 95, 100]
    assert len(s.sessions[0].train_indices) == 60 * 20
    for spec in s.sessions[1:]:
        assert len(spec.train_indices) == 25 and spec.shots == 5
    s.check_labels(labels)
    assert s.class_groups()[1] == (60, 65)


def test_shot_choice_is_seeded():
    labels = np.repeat(np.arange(10), 20)
    a = Schedule.from_class_counts("x", labels, 4, 2, 3, np.random.default_rng(1))
    b = Schedule.from_class_counts("x", labels, 4, 2, 3, np.random.default_rng(1))
    c = Schedule.from_class_counts("x", labels, 4, 2, 3, np.random.default_rng(2))
    assert all((x.train_indices == y.train_indices).all() for x, y in zip(a.sessions, b.sessions))
    assert any((x.train_indices != y.train_indices).any() for x, y in zip(a.sessions[1:], c.sessions[1:]))


def test_rejects_out_of_order_classes():
    with pytest.raises(ScheduleError, match="must introduce classes 2..3"):
        Schedule("bad", 4, (SessionSpec(0, (0, 1), np.arange(2)), SessionSpec(1, (3, 2), np.arange(2, 4), 1)))


def test_rejects_reused_samples_and_wrong_total():
    with pytest.raises(ScheduleError, match="reuses training samples"):
        Schedule("bad", 4, (SessionSpec(0, (0, 1), np.arange(2)), SessionSpec(1, (2, 3), np.arange(1, 3), 1)))
    with pytest.raises(ScheduleError, match="cover 2 classes, expected 4"):
        Schedule("bad", 4, (SessionSpec(0, (0, 1), np.arange(2)),))


def test_check_labels_names_the_session():
    labels = np.array([0, 1, 2, 3, 1])
    s = Schedule("x", 4, (SessionSpec(0, (0, 1), np.array([0, 1])), SessionSpec(1, (2, 3), np.array([2, 4]), 1)))
    with pytest.raises(ScheduleError, match="session 1 lists 1 samples of classes outside 2..3"):
        s.check_labels(labels)
