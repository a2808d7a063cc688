"""The common protocol every FSCIL method implements.

A method sees the base session's training data once (``fit_base``), then each incremental
session's few-shot data in turn (``fit_session``), and after every session is asked for logits
over the classes seen so far (``predict``). The runner never hands it test labels, future
classes or earlier sessions' data; whatever it keeps of the past it declares in ``memory()``.

A complete, runnable plugin is ``examples/nearest_mean_pixels.py``: subclass :class:`MethodBase`,
give it a ``name`` and ``presets``, implement the three methods, and pass the file to
``fscil-bench run --plugin FILE.py`` (or register the class under the ``fscil_bench.methods``
entry-point group of your package).

Three optional methods let the benchmark look inside a method (see :class:`MethodBase`):
``embed`` (the features the classifier acts on), ``classify`` (logits from those features) and
``classifier_weights`` (one classifier vector or prototype per seen class). With them every
session's record carries the neural-collapse diagnostics of the method's test features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from fscil_bench.cache import stable_hash
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.data.views import MethodViews, ViewInputs, views_from_names
from fscil_bench.registry import did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Session:
    """What a method receives for one session.

    Attributes:
        index: 0 for the base session, then 1, 2, ...
        new_classes: global ids of the classes this session introduces.
        num_seen: classes seen once this session is learned (``predict`` returns this many logits).
        shots: samples per new class, ``None`` in the base session.
        train: this session's training samples only.
    """

    index: int
    new_classes: tuple[int, ...]
    num_seen: int
    shots: int | None
    train: LabelledImages

    @property
    def is_base(self) -> bool:
        return self.index == 0


@dataclass(frozen=True)
class BenchmarkInfo:
    """Facts about the benchmark a method may know in advance (no data)."""

    name: str
    version: int
    family: str
    num_classes: int
    num_sessions: int
    num_base_classes: int
    image_size: int

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


class Progress(Protocol):
    """A progress sink: wraps an iterable in a progress bar (or not)."""

    def __call__(self, iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterator[T]: ...


def no_progress(iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterator[T]:
    """A :class:`Progress` sink that shows nothing."""
    return iter(iterable)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's and numpy's global random state with ``seed``; return a CPU generator seeded with it."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


@dataclass
class Context:
    """Everything a method may use besides the session data.

    Attributes:
        device: where to train and predict.
        seed: the run's seed; ``generator`` is a CPU generator seeded with it.
        num_classes_total: classes in the whole benchmark (methods may pre-assign prototypes).
        hparams: the chosen preset's hyperparameters (the method's own dataclass).
        benchmark: facts about the benchmark.
        cache_dir: a folder for caches shared between runs (base models, features).
        progress: wraps long loops in a progress bar.
        log: prints a message without breaking progress bars.
        weights_dir: the folder that holds known pretrained weights files (see
            :mod:`fscil_bench.models.weights`).
        bf16: train under bfloat16 autocast (the run's opt-in; float32 otherwise).
        sync_batchnorm: in data-parallel training, normalise BatchNorm over the global batch.
        views: the names (or descriptions) of the method's own train and test views, None when it
            uses the benchmark's transforms; part of the cache keys of what is trained through them.
        base_test_accuracy: only for a run whose base checkpoint is chosen on the test set (the
            papers' rule, not protocol-clean, see :mod:`fscil_bench.toolkit.checkpoints`): the
            runner's function from a predict function (images -> logits over the base classes) to
            the accuracy on the base classes' test images. None otherwise.
        extra: notes a method adds to its run's record (cache use, precision, initialisation).
    """

    device: torch.device
    seed: int
    generator: torch.Generator
    num_classes_total: int
    hparams: Any
    benchmark: BenchmarkInfo
    cache_dir: Path
    progress: Progress
    log: Callable[[str], None]
    weights_dir: Path | None = None
    bf16: bool = False
    sync_batchnorm: bool = False
    views: dict[str, str] | None = None
    base_test_accuracy: Callable[[Callable[[torch.Tensor], torch.Tensor]], float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        benchmark: BenchmarkInfo,
        hparams: Any,
        seed: int,
        *,
        device: torch.device | str = "cpu",
        cache_dir: Path = Path(".cache"),
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        weights_dir: Path | None = None,
        bf16: bool = False,
        sync_batchnorm: bool = False,
        views: dict[str, str] | None = None,
    ) -> Context:
        """The context of one run: global random state seeded with ``seed`` (torch and numpy, so
        code that draws from them is reproducible too) and ``generator`` a fresh CPU generator
        seeded with it."""
        return cls(
            device=torch.device(device),
            seed=seed,
            generator=seed_everything(seed),
            num_classes_total=benchmark.num_classes,
            hparams=hparams,
            benchmark=benchmark,
            cache_dir=Path(cache_dir),
            progress=progress or no_progress,
            log=log or print,
            weights_dir=Path(weights_dir) if weights_dir is not None else Path(cache_dir) / "weights",
            bf16=bf16,
            sync_batchnorm=sync_batchnorm,
            views=views,
        )

    def stage_seed(self, *tags: Any) -> int:
        """A seed derived from the run's seed and ``tags``, stable across processes."""
        return int(stable_hash([self.seed, *tags], length=8), 16)


@dataclass(frozen=True)
class MemoryDeclaration:
    """What a method keeps from past sessions, beyond its model weights.

    Attributes:
        exemplars: raw training images kept (e.g. iCaRL's exemplar memory).
        feature_vectors: stored feature vectors (class means, prototypes, cached features).
        bytes: approximate bytes of that memory.
        notes: free text (e.g. "one mean feature per old class").
    """

    exemplars: int = 0
    feature_vectors: int = 0
    bytes: int = 0
    notes: str = ""


@runtime_checkable
class Method(Protocol):
    """The interface a plugin implements. See :class:`MethodBase` for the usual base class."""

    name: str

    def fit_base(self, session: Session, ctx: Context) -> None: ...

    def fit_session(self, session: Session, ctx: Context) -> None: ...

    def predict(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class EmbeddingMethod(Method, Protocol):
    """A :class:`Method` that also exposes its features and its classifier over them
    (``predict(x)`` must equal ``classify(embed(x))``); ``classifier_weights`` stays optional."""

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...

    def classify(self, features: torch.Tensor) -> torch.Tensor: ...


class MethodBase:
    """Convenient base class for methods.

    Subclasses set ``name``, ``presets`` (preset name -> hyperparameter dataclass instance or
    dict; a preset may also map benchmark families to those, e.g. ``{"cifar100": ..., "default": ...}``)
    and implement ``fit_base``, ``fit_session`` and ``predict``.

    Class attributes a report shows next to the method:
        extra_data: data used beyond the benchmark (e.g. "ImageNet-pretrained backbone").
        oracle: True for a method that breaks the protocol on purpose (an upper bound).
        paper: the citation of the method.

    Views. :meth:`views` gives the method's own training augmentation and test-time view for a
    benchmark (by default the ones its hyperparameters name in ``train_view`` and ``test_view``,
    see :mod:`fscil_bench.data.views`); the runner attaches them to every session's data and shows
    the test images through the test view. Without them the benchmark's transforms apply.

    Optional methods (define them on the subclass; the runner looks them up with ``getattr``):
        embed(images) -> Tensor (N, d): the features the classifier acts on, under
            ``torch.no_grad()`` like ``predict``.
        classify(features) -> Tensor (N, num_seen): the logits of those features. With both,
            the runner evaluates ``classify(embed(x))`` instead of ``predict(x)`` (so the two
            must agree) and keeps the features for the neural-collapse diagnostics
            (:func:`fscil_bench.metrics.collapse_diagnostics`) without a second forward pass.
            With ``embed`` alone, ``predict`` still gives the logits and ``embed`` is run again
            for the diagnostics.
        classifier_weights() -> Tensor (num_seen, d) | None: the classifier vectors or class
            prototypes in the ``embed`` space, row ``c`` for class ``c`` (biases left out); it
            gives the self-duality and feature-classifier alignment diagnostics.

    A method that trains cached base models (:func:`fscil_bench.toolkit.base_models.cached_model`)
    says which in :meth:`base_model_recipes`, so ``fscil-bench run --dry-run`` can tell which
    would be trained and which loaded.
    """

    name: ClassVar[str] = ""
    presets: ClassVar[Mapping[str, Any]] = {}
    extra_data: ClassVar[str | None] = None
    oracle: ClassVar[bool] = False
    paper: ClassVar[str] = ""

    @classmethod
    def resolve_preset(cls, preset: str, family: str) -> Any:
        """The hyperparameters of ``preset`` for a benchmark ``family``.

        ``PRESET+RULE`` is ``PRESET`` with its base recipe's checkpoint rule set to ``RULE``
        (``last``, ``validation`` or ``best-on-test``; see :func:`with_base_checkpoint`).
        """
        name, plus, rule = preset.partition("+")
        if plus:
            return with_base_checkpoint(cls.resolve_preset(name, family), rule, f"{cls.name!r} preset {name!r}")
        if preset not in cls.presets:
            raise KeyError(f"method {cls.name!r} has no preset {preset!r}{did_you_mean(preset, list(cls.presets))}; "
                           f"choose from {', '.join(cls.presets)}")
        value = cls.presets[preset]
        if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) or dataclasses.is_dataclass(v) for v in value.values()):
            if family in value:
                return value[family]
            if "default" in value:
                return value["default"]
            raise KeyError(f"method {cls.name!r} preset {preset!r} has no settings for {family!r} (has {', '.join(value)})")
        return value

    @classmethod
    def views(cls, hparams: Any, inputs: ViewInputs) -> MethodViews:
        """This method's own train and test transforms for a benchmark described by ``inputs``
        (None for either: the benchmark's). By default the views named by the hyperparameters'
        ``train_view`` and ``test_view`` fields (:data:`fscil_bench.data.views.VIEWS`)."""
        return views_from_names(getattr(hparams, "train_view", None), getattr(hparams, "test_view", None), inputs)
    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]] | None:
        """The recipes of the cached base models ``fit_base`` would train or load in the run of
        ``ctx`` (its benchmark, seed and hyperparameters), in the order it asks for them, computed
        without data or training; ``[]`` for none, ``None`` (the default) when not declared."""
        return None

    def memory(self) -> MemoryDeclaration:
        """What this method keeps from past sessions; override when it keeps anything."""
        return MemoryDeclaration()

    def fit_base(self, session: Session, ctx: Context) -> None:
        raise NotImplementedError

    def fit_session(self, session: Session, ctx: Context) -> None:
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_seen)``. By default ``classify(embed(images))`` for a method that
        defines both; a method without them must override this."""
        embed, classify = getattr(self, "embed", None), getattr(self, "classify", None)
        if embed is None or classify is None:
            raise NotImplementedError(f"{type(self).__name__} must define predict, or embed and classify")
        with torch.no_grad():
            return classify(embed(images))


#: The base checkpoint rules a preset name may add after ``+`` (:mod:`fscil_bench.toolkit.checkpoints`).
BASE_CHECKPOINT_RULES = ("last", "validation", "best-on-test")


def with_base_checkpoint(hparams: Any, rule: str, what: str = "the preset") -> Any:
    """``hparams`` with the ``checkpoint`` field of its ``base`` recipe set to ``rule``."""
    if rule not in BASE_CHECKPOINT_RULES:
        raise KeyError(f"unknown base checkpoint rule {rule!r} after '+'; choose from {', '.join(BASE_CHECKPOINT_RULES)}")
    base = getattr(hparams, "base", None)
    if not (dataclasses.is_dataclass(hparams) and dataclasses.is_dataclass(base) and hasattr(base, "checkpoint")):
        raise KeyError(f"{what} has no base recipe whose checkpoint can be chosen")
    return dataclasses.replace(hparams, base=dataclasses.replace(base, checkpoint=rule))


def uses_test_checkpoint(hparams: Any) -> bool:
    """Whether any recipe inside ``hparams`` keeps its checkpoint by test accuracy (``"best-on-test"``)."""
    if not dataclasses.is_dataclass(hparams) or isinstance(hparams, type):
        return False
    if getattr(hparams, "checkpoint", None) == "best-on-test":
        return True
    return any(uses_test_checkpoint(getattr(hparams, f.name)) for f in dataclasses.fields(hparams))


def hparams_to_dict(hparams: Any) -> dict[str, Any]:
    """A JSON-friendly view of a preset (dataclass or mapping)."""
    if dataclasses.is_dataclass(hparams) and not isinstance(hparams, type):
        return dataclasses.asdict(hparams)
    if isinstance(hparams, Mapping):
        return dict(hparams)
    return {"value": repr(hparams)}
