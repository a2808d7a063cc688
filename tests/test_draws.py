"""Other few-shot draws (splits) and class orders: the documented rules, the relabelling, what stays fixed."""

import numpy as np
import pytest

from fscil_bench.benchmarks.benchmark import BenchmarkError
from fscil_bench.benchmarks.variants import benchmark_variant
from fscil_bench.run.runner import make_session, run_method
from fscil_bench.run.methods import discover
from fscil_bench.schedules.draws import (
    class_arrival,
    relabel,
    schedule_digest,
    schedule_variant,
    variant_record,
)
from conftest import make_synthetic_benchmark


@pytest.fixture(scope="module")
def bench():
    return make_synthetic_benchmark(num_base=4, ways=2, sessions=3, shots=3, train_per_class=12)


def test_split_zero_order_zero_is_the_standard_schedule(bench):
    variant = benchmark_variant(bench, 0, 0)
    assert variant.schedule is bench.schedule and variant.train is bench.train and variant.test is bench.test
    assert variant.variant.is_standard and variant.variant.arrival == tuple(range(10))
    assert variant_record(variant.schedule, variant.variant) == {"split": 0, "order": 0,
                                                                  "sha256": schedule_digest(bench.schedule)}


def test_a_split_draws_each_class_by_the_documented_rule(bench):
    variant = benchmark_variant(bench, 3, 0)
    labels = bench.train.labels
    assert variant.schedule.sessions[0] is bench.schedule.sessions[0]  # the base session keeps every sample
    changed = False
    for spec, standard in zip(variant.schedule.sessions[1:], bench.schedule.sessions[1:]):
        assert spec.classes == standard.classes and spec.shots == standard.shots == 3
        for c in spec.classes:
            mine = spec.train_indices[labels[spec.train_indices] == c]
            expected = np.sort(np.random.default_rng([1, 3, c]).choice(np.flatnonzero(labels == c), 3, replace=False))
            np.testing.assert_array_equal(mine, expected)
            changed |= not np.array_equal(mine, standard.train_indices[labels[standard.train_indices] == c])
    assert changed  # another draw than the standard lists
    again = benchmark_variant(bench, 3, 0)
    assert schedule_digest(again.schedule) == schedule_digest(variant.schedule)
    assert schedule_digest(benchmark_variant(bench, 4, 0).schedule) != schedule_digest(variant.schedule)


def test_an_order_permutes_the_novel_classes_and_relabels_train_and_test(bench):
    variant = benchmark_variant(bench, 0, 2)
    arrival = np.array(variant.variant.arrival)
    expected = np.concatenate([np.arange(4), 4 + np.random.default_rng([2, 2]).permutation(6)])
    np.testing.assert_array_equal(arrival, expected)
    assert not np.array_equal(arrival, np.arange(10))
    assert [s.ways for s in variant.schedule.sessions] == [s.ways for s in bench.schedule.sessions]
    for new_id, old_id in enumerate(arrival):  # the images of class new_id are those of standard class arrival[new_id]
        for new, old in ((variant.train, bench.train), (variant.test, bench.test)):
            np.testing.assert_array_equal(new.images[new.labels == new_id], old.images[old.labels == old_id])
    # Each class keeps its standard shots, under its new id and in its new session.
    for t, spec in enumerate(variant.schedule.sessions[1:], start=1):
        session = make_session(variant, t)
        assert session.train.classes() == list(spec.classes)
        for c in spec.classes:
            old = bench.schedule.sessions[1 + (arrival[c] - 4) // 2]
            shots = old.train_indices[bench.train.labels[old.train_indices] == arrival[c]]
            np.testing.assert_array_equal(np.sort(spec.train_indices[variant.train.labels[spec.train_indices] == c]), shots)
    assert variant.train.images is bench.train.images  # relabelled, not copied


def test_a_class_has_the_same_shots_in_a_split_whatever_the_order(bench):
    drawn, reordered = benchmark_variant(bench, 2, 0), benchmark_variant(bench, 2, 5)
    arrival = reordered.variant.arrival
    for c in range(4, 10):
        in_reordered = np.flatnonzero(reordered.train.labels == c)
        shots_reordered = np.concatenate([s.train_indices for s in reordered.schedule.sessions[1:]])
        shots_drawn = np.concatenate([s.train_indices for s in drawn.schedule.sessions[1:]])
        np.testing.assert_array_equal(np.intersect1d(in_reordered, shots_reordered),
                                      np.intersect1d(np.flatnonzero(drawn.train.labels == arrival[c]), shots_drawn))


def test_the_base_session_is_byte_identical_under_every_split_and_order(bench):
    standard = make_session(bench, 0).train
    for split, order in ((1, 0), (0, 1), (4, 3)):
        base = make_session(benchmark_variant(bench, split, order), 0).train
        assert base.digest() == standard.digest()  # the base models' data digest (cached_model)
        assert base.classes() == standard.classes()


def test_the_record_rebuilds_the_schedule_exactly(bench):
    variant = benchmark_variant(bench, 5, 4)
    record = variant_record(variant.schedule, variant.variant)
    assert record["split"] == 5 and record["order"] == 4 and record["class_order"] == list(variant.variant.arrival)
    assert record["session_train_indices"] == [s.train_indices.tolist() for s in variant.schedule.sessions[1:]]
    rebuilt, _ = schedule_variant(bench.schedule, bench.train.labels, record["split"], record["order"])
    assert schedule_digest(rebuilt) == record["sha256"]


def test_relabel_maps_standard_ids_to_arrival_positions():
    arrival = (0, 1, 4, 2, 3)
    np.testing.assert_array_equal(relabel(np.array([0, 2, 3, 4]), arrival), [0, 3, 4, 2])
    assert class_arrival(make_synthetic_benchmark().schedule, 0).tolist() == list(range(10))


def test_bad_splits_and_orders_are_one_line_errors(bench):
    with pytest.raises(BenchmarkError, match="split must be an integer >= 0, got -1"):
        benchmark_variant(bench, -1, 0)
    with pytest.raises(BenchmarkError, match="variants are built from the standard schedule"):
        benchmark_variant(benchmark_variant(bench, 1, 0), 2, 0)


def test_a_pool_of_exactly_the_shots_has_one_draw():
    few = make_synthetic_benchmark(shots=3, train_per_class=3)
    assert benchmark_variant(few, 7, 0).schedule.sessions[1].train_indices.tolist() == \
        few.schedule.sessions[1].train_indices.tolist()


def test_a_frozen_backbone_method_reuses_the_base_model_for_other_splits_and_orders(bench, run_options):
    prototype = discover([]).get("prototype")
    first = run_method(bench, prototype, "smoke", 0, run_options)
    other = run_method(benchmark_variant(bench, 1, 1), prototype, "smoke", 0, run_options)
    assert first.status == other.status == "completed"
    assert first.extra["base_model"]["cache_hit"] is False
    assert other.extra["base_model"]["cache_hit"] is True
    assert other.extra["base_model"]["key"] == first.extra["base_model"]["key"]
    # the base model is keyed by the digest of its data: the drawn, reordered split's base session is the standard one
    assert other.extra["base_model"]["data_sha256"] == first.extra["base_model"]["data_sha256"] \
        == make_session(bench, 0).train.digest()
    np.testing.assert_array_equal(first.predictions[0], other.predictions[0])  # the same base session


def test_a_real_benchmark_gets_other_draws_and_orders_too(tmp_path):
    from real_data_fixtures import NearestMean, cifar_lists, write_cifar

    from fscil_bench.benchmarks.benchmark import LoadOptions
    from fscil_bench.benchmarks.real import load_real_benchmark
    from fscil_bench.data.families import build_schedule
    from fscil_bench.run.runner import RunOptions
    from fscil_bench.schedules.files import write_schedule_file

    arrays = write_cifar(tmp_path / "data", num_classes=6, train_per_class=8, test_per_class=4)
    lists = cifar_lists(tmp_path / "lists", arrays["train"][1], base=2, ways=2, shots=3)
    sched = write_schedule_file(build_schedule(lists, "cifar100", name="tiny", log=lambda m: None, num_classes=6,
                                               base_classes=2, train_per_class=8, test_per_class=4), tmp_path / "s.json")
    bench = load_real_benchmark("cifar100", LoadOptions(tmp_path / "cache", tmp_path / "data", lambda m: None),
                                schedule=sched)
    variant = benchmark_variant(bench, 2, 1)
    assert variant.id == bench.id == "cifar100@1"  # the same benchmark version
    for spec in variant.schedule.sessions[1:]:
        labels = variant.train.labels[spec.train_indices]
        assert sorted(set(labels.tolist())) == list(spec.classes) and np.bincount(labels - spec.classes[0]).tolist() == [3, 3]
    result = run_method(variant, NearestMean, "quick", 0, RunOptions(cache_dir=tmp_path / "rc", log=lambda m: None))
    assert result.status == "completed" and result.metrics["last"] > 0.9
