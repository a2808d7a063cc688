"""Every built-in method, run end to end: reproducible, seed-sensitive, and doing what it claims.

* Determinism: each method's ``smoke`` preset run twice on the same seed from two empty caches
  gives identical predictions (the later runs replaying the first one's evaluation batches) and
  identical final logits (and so does a third run that loads the cached base model); another
  seed gives other predictions (every built-in method seeds its base model's initial weights
  from the run's seed). These runs use a benchmark of pure noise, where no method can be right
  for a reason, so its predictions follow its weights.
* Behaviour, on the well-separated synthetic benchmark (``conftest.make_synthetic_benchmark``,
  where the right answer is known), each method trained enough to learn it (the ``smoke``
  settings with a 10-epoch base session; see ``TRAINED``): every method beats the constant
  predictor by a wide margin; ``finetune`` forgets the base classes; ``prototype``'s prototypes
  are the class means of the training features; ``cec``'s meta-training lowers its loss (on
  episodes of 10 base classes); and what each method declares in ``memory()`` is what
  its instance holds.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from conftest import make_synthetic_benchmark
from torch import nn

from fscil_bench.data.arrays import ImageArray, iterate_images
from fscil_bench.integrations.pretrained import FrozenBackbone
from fscil_bench.run.methods import discover
from fscil_bench.run.runner import RunOptions, make_session, run_method
from fscil_bench.toolkit.exemplars import ImageBank
from fscil_bench.toolkit.features import FrozenFeatureMemo
from fscil_bench.toolkit.training import SGDRecipe, StepRecipe

REGISTRY = discover()
METHODS = REGISTRY.names()
NEEDS_AVALANCHE = importlib.util.find_spec("avalanche") is None


def method_param(name: str):
    marks = [pytest.mark.skip(reason="avalanche-lib is not installed (bash scripts/install.sh installs it)")] if (
        name.startswith("avalanche-") and NEEDS_AVALANCHE) else []
    return pytest.param(name, marks=marks, id=name)


ALL = [method_param(n) for n in METHODS]


def keeping_instance(cls: type) -> tuple[type, dict]:
    """``cls`` with its instance kept after a run (the runner calls ``memory()`` last); nothing
    else changes."""
    box: dict = {}

    def memory(self):
        box["method"] = self
        return cls.memory(self)

    return type(cls.__name__, (cls,), {"memory": memory}), box


def with_preset(cls: type, preset: str, **overrides) -> type:
    """``cls`` with a ``test`` preset: ``preset``'s settings with ``overrides``."""
    hp = dataclasses.replace(cls.resolve_preset(preset, "synthetic"), **overrides)
    return type(cls.__name__, (cls,), {"presets": {**cls.presets, "test": hp}})


def final_logits(method, bench) -> torch.Tensor:
    """The method's logits for every test image, after its last session."""
    rows = np.flatnonzero(bench.test.labels < bench.schedule.num_classes)
    with torch.no_grad():
        return torch.cat([method.predict(x) for x in iterate_images(bench.test.images, bench.eval_transform, 64, "cpu", rows)])


# --- determinism ---------------------------------------------------------------------------------


def noise_benchmark():
    """The synthetic benchmark's schedule with uniform-noise images: nothing to learn."""
    bench = make_synthetic_benchmark()
    rng = np.random.default_rng(7)

    def noise(data: ImageArray) -> ImageArray:
        return ImageArray(rng.integers(0, 256, data.images.shape, dtype=np.uint8), data.labels)

    return dataclasses.replace(bench, train=noise(bench.train), test=noise(bench.test))


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """``smoke_runs(name)``: the method's smoke runs on the noise benchmark, made once when first asked for:
    seed 0 from an empty cache (``a``), again from another empty cache (``b``), again from
    ``a``'s cache (``hit``), and seed 1 from an empty cache (``other_seed``)."""
    bench, done = noise_benchmark(), {}

    def get(name: str) -> dict:
        if name not in done:
            out = {}
            for label, seed, cache in [("a", 0, "a"), ("b", 0, "b"), ("hit", 0, "a"), ("other_seed", 1, "c")]:
                cls, box = keeping_instance(REGISTRY.get(name))
                # b and hit see a's evaluation batches: on pure noise the scores are near-ties that
                # another batching's rounding can flip (order independence: test_isolation.py)
                replay = out["a"][0].evaluation_order["seeds"] if label in ("b", "hit") else None
                options = RunOptions(cache_dir=tmp_path_factory.getbasetemp() / f"smoke-{name}-{cache}", log=lambda m: None,
                                     isolation="none",  # in this process: the test reads the method's instance
                                     order_seeds=replay)
                result = run_method(bench, cls, "smoke", seed, options)
                assert result.status == "completed", result.error and result.error["traceback"]
                out[label] = (result, final_logits(box["method"], bench))
            done[name] = out
        return done[name]

    return get


@pytest.mark.parametrize("name", ALL)
def test_the_same_seed_from_empty_caches_gives_the_same_predictions(name, smoke_runs):
    runs = smoke_runs(name)
    (a, logits_a), (b, logits_b), (hit, logits_hit) = runs["a"], runs["b"], runs["hit"]
    for other in (b, hit):
        assert len(other.predictions) == len(a.predictions)
        for t, (pa, po) in enumerate(zip(a.predictions, other.predictions)):
            np.testing.assert_array_equal(pa, po, err_msg=f"session {t}")
    assert torch.equal(logits_a, logits_b) and torch.equal(logits_a, logits_hit)
    if "base_model" in a.extra:  # the third run loaded what the first one trained
        assert (a.extra["base_model"]["cache_hit"], b.extra["base_model"]["cache_hit"],
                hit.extra["base_model"]["cache_hit"]) == (False, False, True)


@pytest.mark.parametrize("name", ALL)
def test_another_seed_gives_other_predictions(name, smoke_runs):
    runs = smoke_runs(name)
    (a, logits_a), (other, logits_other) = runs["a"], runs["other_seed"]
    assert not torch.equal(logits_a, logits_other)
    assert any(not np.array_equal(p, q) for p, q in zip(a.predictions, other.predictions))


# --- behaviour ---------------------------------------------------------------------------------------

#: Enough training to learn the separable benchmark (each method's smoke settings otherwise).
BASE = SGDRecipe(epochs=10, lr=0.05, batch_size=16)
TRAINED = {name: {"base": BASE} for name in METHODS}
for _name in ("etf", "etf-ce", "etf-linear-ce"):  # as their quick presets: a neck on the shared frozen backbone
    TRAINED[_name] = {"warm_start": BASE, "train_backbone": False, "base": SGDRecipe(epochs=30, lr=0.2, batch_size=16),
                      "feature_dim": 64, "session": StepRecipe(steps=30, lr=0.1, batch_size=8)}
# finetune trains on each session's shots as its quick preset does (20 epochs), which is what makes it forget
TRAINED["finetune"]["session"] = SGDRecipe(epochs=20, lr=0.01, batch_size=8, schedule="constant")
# On 48 base images the Fisher values are large: at the smoke preset's lambda = 1000 the penalty's
# steps diverge (weights grow to ~40) and the network collapses onto one class by session 3.
TRAINED["avalanche-ewc"]["ewc_lambda"] = 10.0
# s3c learns 4 joint (class, rotation) labels per class, and on this benchmark (a square's place is
# the class) a quarter turn of one base class's image is, to a pixel, another's: rot90 takes class 2
# to class 0 and class 1 to class 3. Every rotated base image so has a twin under another joint
# label (the base session's joint accuracy tops out at 1/2), and it needs 40 epochs where the others need 10.
TRAINED["s3c"]["base"] = dataclasses.replace(BASE, epochs=40)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(name)``: ``(result, method instance)``, the method's run on the separable
    benchmark with its ``TRAINED`` settings, made once when first asked for (one shared cache)."""
    bench, cache, done = make_synthetic_benchmark(), tmp_path_factory.mktemp("trained-cache"), {}

    def get(name: str):
        if name not in done:
            cls, box = keeping_instance(with_preset(REGISTRY.get(name), "smoke", **TRAINED[name]))
            result = run_method(bench, cls, "test", 0, RunOptions(cache_dir=cache, log=lambda m: None, isolation="none"))
            assert result.status == "completed", result.error and result.error["traceback"]
            done[name] = (result, box["method"])
        return done[name]

    get.bench = bench
    return get


@pytest.mark.parametrize("name", ALL)
def test_each_method_beats_a_constant_predictor_by_a_wide_margin(name, trained):
    result, _ = trained(name)
    bench = trained.bench
    # The best constant answer is right for one class's test images: 1 / num_seen of them.
    constant = [1 / bench.schedule.num_seen(t) for t in range(len(bench.schedule))]
    accuracy = result.metrics["session_acc"]
    assert accuracy[0] >= 0.9, accuracy  # the base classes are learned
    assert np.mean(accuracy) >= 2 * np.mean(constant), (accuracy, constant)
    # No session below the constant predictor (finetune, which keeps only its last session's
    # classes by design, may come down to it).
    assert all(a >= c for a, c in zip(accuracy, constant)), (accuracy, constant)


def test_finetune_forgets_the_base_classes_and_prototype_does_not(trained):
    finetune, _ = trained("finetune")
    base, novel = finetune.metrics["base_acc"], finetune.metrics["novel_acc"]
    assert base[0] >= 0.9 and base[-1] <= 0.2, base  # learned, then overwritten by the few shots
    assert novel[-1] > base[-1]
    prototype, _ = trained("prototype")
    assert min(prototype.metrics["base_acc"]) >= 0.9  # a frozen backbone keeps them


def test_prototypes_are_the_class_means_of_the_training_features(trained):
    _, method = trained("prototype")
    bench = trained.bench
    means = []
    for t in range(len(bench.schedule)):
        train = make_session(bench, t).train
        images, labels = next(train.batches(len(train), augment=False))  # the test-time view, all at once
        with torch.no_grad():
            method.backbone.eval()
            features = method.backbone(images)
        means += [features[labels == c].mean(0) for c in make_session(bench, t).new_classes]
    assert method.prototypes.shape == (bench.schedule.num_classes, features.shape[1])
    torch.testing.assert_close(method.prototypes, torch.stack(means), rtol=1e-5, atol=1e-5)


def test_cec_meta_training_lowers_its_loss(tmp_path):
    """The same seeded sequence of pseudo-incremental episodes, meta-trained and not (attention
    learning rate 0: the block stays at its initialisation): training lowers the loss of the later
    episodes. On 10 base classes: 5-way episodes (plus their 5 rotated pseudo classes)."""
    bench = make_synthetic_benchmark(num_base=10, sessions=2)
    registered = REGISTRY.get("cec")
    losses = {}

    def run(lr: float) -> np.ndarray:
        def meta_train(self, *args, **kwargs):
            losses[lr] = registered._meta_train(self, *args, **kwargs)
            return losses[lr]

        cls = type(registered.__name__, (registered,), {"_meta_train": meta_train})
        cls = with_preset(cls, "smoke", base=BASE, epochs=40, episodes_per_epoch=1, ways=5, attention_lr=lr,
                          lr_step_epochs=1000)
        result = run_method(bench, cls, "test", 0, RunOptions(cache_dir=tmp_path, log=lambda m: None, isolation="none"))
        assert result.status == "completed", result.error and result.error["traceback"]
        return np.array(losses[lr])

    trained, untrained = run(0.01), run(0.0)
    assert len(trained) == len(untrained) == 40
    assert np.array_equal(trained[:1], untrained[:1])  # the same first episode, before any update
    later = slice(20, None)
    assert (trained[later] < untrained[later]).mean() >= 0.9, (trained, untrained)
    assert trained[later].mean() < 0.95 * untrained[later].mean(), (trained, untrained)


# --- declared memory against the instance ------------------------------------------------------------


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def held_tensors(method) -> dict[str, torch.Tensor]:
    """Every tensor the instance holds outside its networks (weights) and its test-time feature
    memo, by attribute path."""
    out = {}
    for name, value in vars(method).items():
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, ImageBank):
            out[f"{name}.images"], out[f"{name}.labels"] = value.images, value.labels
        elif isinstance(value, (list, tuple, dict)) and any(isinstance(v, torch.Tensor) for v in
                                                            (value.values() if isinstance(value, dict) else value)):
            raise AssertionError(f"{name}: tensors in a container; account for them in this test")
        else:
            assert isinstance(value, (nn.Module, FrozenBackbone, FrozenFeatureMemo, torch.Generator, int, float, str,
                                      list, tuple, dict, type(None))) \
                or dataclasses.is_dataclass(value) or type(value).__module__.startswith("avalanche"), (name, type(value))
    return out


# What each held tensor is: kept images ("exemplars"), kept feature vectors ("features"), other
# kept arrays ("state": covariances, Gram matrices, a fixed random projection; counted in bytes,
# not as vectors), the labels of either ("labels", not counted in bytes), or a classifier computed
# from kept vectors and weights ("classifier": model state, not memory).
ROLES = {
    "finetune": {},
    "prototype": {"prototypes": "features"},
    "cec": {"prototypes": "features"},
    "teen": {"prototypes": "features"},
    "fact": {"prototypes": "features", "virtual": "features"},
    "joint-balanced": {"bank.images": "exemplars", "bank.labels": "labels", "pool_features": "features",
                       "shot_views": "features"},
    "icarl": {"bank.images": "exemplars", "bank.labels": "labels", "means": "features"},
    "joint": {"bank.images": "exemplars", "bank.labels": "labels", "features": "features", "feature_labels": "labels"},
    **{n: {"means": "features", "mean_labels": "labels"} for n in ("etf", "etf-ce", "etf-linear-ce")},
    **{n: {} for n in ("avalanche-naive", "avalanche-lwf", "avalanche-ewc", "avalanche-replay")},
    "simplecil": {"prototypes": "features"},
    "fecam": {"means": "features", "precisions": "state"},
    "ranpac": {"w_rand": "state", "gram": "state", "cross": "state", "weights": "classifier"},
    "alice": {"prototypes": "features"},
    "savc": {"rows": "features"},
    "s3c": {"prototypes": "features"},
}


def test_every_method_has_its_memory_roles_listed():
    assert sorted(ROLES) == sorted(METHODS)


@pytest.mark.parametrize("name", ALL)
def test_declared_memory_matches_what_the_instance_holds(name, trained):
    result, method = trained(name)
    bench = trained.bench
    held = held_tensors(method)
    assert set(held) == set(ROLES[name]), f"{name} holds {sorted(held)}; ROLES lists {sorted(ROLES[name])}"
    exemplars = sum(len(t) for k, t in held.items() if ROLES[name][k] == "exemplars")
    vectors = sum(len(t) if t.dim() == 2 else 1 for k, t in held.items() if ROLES[name][k] == "features")
    size = sum(nbytes(t) for k, t in held.items() if ROLES[name][k] in ("exemplars", "features", "state"))
    if name.startswith("avalanche-"):
        exemplars, vectors, size = avalanche_state(name, method, bench)
    declared = result.memory
    assert (declared["exemplars"], declared["feature_vectors"], declared["bytes"]) == (exemplars, vectors, size)
    if "bank.images" in held:  # kept images are the benchmark's own training images, with their labels
        train = {img.tobytes(): int(y) for img, y in zip(bench.train.images, bench.train.labels)}
        assert all(train.get(img.numpy().tobytes()) == int(y) for img, y in zip(held["bank.images"], held["bank.labels"]))


def avalanche_state(name: str, method, bench) -> tuple[int, int, int]:
    """What the Avalanche strategy keeps, read from its plugins, with bounds from the network."""
    plugins = method.avalanche_strategy.plugins
    buffers = [p.storage_policy.buffer for p in plugins if getattr(p, "storage_policy", None) is not None]
    teachers = [p.lwf.prev_model for p in plugins if getattr(getattr(p, "lwf", None), "prev_model", None) is not None]
    ewc = [p for p in plugins if getattr(p, "importances", None)]
    assert (len(buffers), len(teachers), len(ewc)) == {"avalanche-naive": (0, 0, 0), "avalanche-replay": (1, 0, 0),
                                                       "avalanche-lwf": (0, 1, 0), "avalanche-ewc": (0, 0, 1)}[name]
    weights = sum(nbytes(p) for p in method.model.parameters())
    image = int(np.prod(bench.train.images.shape[1:]))
    if buffers:  # a full buffer: its size, or every training image seen if fewer
        seen = sum(len(s.train_indices) for s in bench.schedule.sessions)
        kept = len(buffers[0])
        assert kept == min(seen, type(method).resolve_preset("test", "synthetic").mem_size)
        return kept, 0, kept * image
    if teachers:  # one copy of the previous network: at most the current one (whose head has grown)
        size = sum(nbytes(p) for p in teachers[0].parameters())
        assert 0.5 * weights < size <= weights
        return 0, 0, size
    if ewc:  # an importance and a parameter snapshot per parameter, per experience (mode "separate")
        plugin = ewc[0]
        experiences = len(bench.schedule)
        assert len(plugin.importances) == len(plugin.saved_params) == experiences
        size = sum(nbytes(d.data) for per_exp in list(plugin.importances.values()) + list(plugin.saved_params.values())
                   for d in per_exp.values())
        assert 2 * experiences * 0.5 * weights < size <= 2 * experiences * weights
        return 0, 0, size
    return 0, 0, 0

