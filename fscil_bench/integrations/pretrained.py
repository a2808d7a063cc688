"""Frozen backbones for the methods that work on fixed features, and their features computed once.

A frozen-feature method (``simplecil``, ``fecam``, ``ranpac``; ``prototype`` with ``pretrained``)
gets its backbone from :func:`frozen_backbone`:

* with ``pretrained`` (a known weights name or a file, :mod:`fscil_bench.models.weights`): the
  network of ``backbone`` (``None``: the one the known weights fit) loaded from those weights and
  never trained: ``timm:<model>`` and ``open_clip:<config>`` through the adapters
  :mod:`~fscil_bench.integrations.timm_backbones` and
  :mod:`~fscil_bench.integrations.open_clip_backbones` (optional dependencies), fed their own view
  of the images (:class:`fscil_bench.models.input_view.ViewAdapter`: resized on the device to the
  network's resolution, with its own normalisation); a name of :data:`fscil_bench.models.BACKBONES`
  with a torchvision ``state_dict``, fed the benchmark's view. The run's record states the
  weights (name, file, sha256, training data, overlapping benchmarks), the library and the view.
* without: the backbone of the shared cross-entropy base model trained on the base session
  (:func:`fscil_bench.toolkit.base_models.cross_entropy_base_model`), frozen afterwards.

:class:`FrozenBackbone` computes features once per (weights, view): training images through
:func:`fscil_bench.toolkit.features.cached_features`, test images through a
:class:`~fscil_bench.toolkit.features.FrozenFeatureMemo` backed by a
:class:`~fscil_bench.toolkit.feature_store.FeatureStore`; both live under ``<cache>/features``,
keyed by :attr:`FrozenBackbone.key` (the weights' sha256, the architecture, its arguments and the
view). ``ctx.extra["feature_extraction"]["images_embedded"]`` counts the images the network
actually ran on in this run (0 when every feature came from the cache).

Other learners take a library backbone through :class:`LibraryBackbones` (a mixin for the
NC-FSCIL learner: ``etf`` with ``backbone="timm:..."``), whose :class:`LibraryBackboneInit` builds
it. A method of its own (e.g. ``teen``) takes one by giving its hyperparameters the fields of
:class:`FrozenBackboneHparams` and calling :func:`frozen_backbone` in ``fit_base``, as
``baselines/prototype.py`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from fscil_bench.cache import stable_hash
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.data.transforms import Normalization
from fscil_bench.models.input_view import InputView, ViewAdapter
from fscil_bench.models.weights import LocalWeights, WeightsError, resolve_weights
from fscil_bench.protocol import Context, MethodBase, Session
from fscil_bench.toolkit.backbones import BackboneInit, backbone_init
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.feature_store import FeatureStore
from fscil_bench.toolkit.features import FrozenFeatureMemo, cached_features
from fscil_bench.toolkit.training import SGDRecipe

#: Bumped when what a frozen backbone's features are changes (view, pooling, ...).
FROZEN_FEATURES_VERSION = 1
LIBRARY_PREFIXES = ("timm", "open_clip")


def library_of(backbone: str | None) -> tuple[str, str] | None:
    """``("timm", "vit_base_patch16_224")`` for ``"timm:vit_base_patch16_224"``; None otherwise."""
    library, sep, arch = (backbone or "").partition(":")
    return (library, arch) if sep and library in LIBRARY_PREFIXES and arch else None


def check_backbone_use(backbone: str | None, pretrained: str | None, train_backbone: bool) -> None:
    """Raise ``ValueError`` for a preset that cannot run: a frozen backbone (``train_backbone``
    False) without ``pretrained`` weights, or a library network (or none) marked for training."""
    if not train_backbone and not pretrained:
        raise ValueError("train_backbone=False uses a pretrained network frozen: set pretrained")
    if train_backbone and (backbone is None or library_of(backbone)):
        raise ValueError(f"backbone {backbone!r} is only used frozen: set train_backbone=False")


def build_library_network(backbone: str, weights: LocalWeights, args: Mapping[str, Any]) -> tuple[nn.Module, int, InputView, str]:
    """The library network ``backbone`` (``timm:...`` / ``open_clip:...``) loaded from ``weights``."""
    library, arch = library_of(backbone) or (None, None)
    if library == "timm":
        from fscil_bench.integrations.timm_backbones import build_timm_backbone

        return build_timm_backbone(arch, weights.path, args)
    if library == "open_clip":
        from fscil_bench.integrations.open_clip_backbones import build_open_clip_backbone

        return build_open_clip_backbone(arch, weights.path, args)
    raise ValueError(f"{backbone!r} is not a library backbone (timm:<model> or open_clip:<config>)")


@dataclass(frozen=True)
class FrozenBackboneHparams:
    """The backbone of a frozen-feature method.

    Attributes:
        pretrained: a known weights name or a weights file (the pretrained track); ``None``: the
            backbone of the shared cross-entropy base model (the from-scratch track).
        backbone: with ``pretrained``, the network the file fits (``timm:<model>``,
            ``open_clip:<config>`` or a torchvision-style name; ``None``: the known weights' own);
            without, a name of :data:`fscil_bench.models.BACKBONES` (``None``: the quick presets' one).
        backbone_args: constructor arguments of a library network as ``(name, value)`` pairs
            (``None``: the known weights' own).
        normalize_inputs: normalise the network's input with its own mean and std (``False`` feeds
            [0, 1] images, as the official SimpleCIL, FeCAM and RanPAC code does for ViT-B/16).
        base: the base model's SGD recipe (without ``pretrained``).
    """

    pretrained: str | None = None
    backbone: str | None = None
    backbone_args: tuple[tuple[str, Any], ...] | None = None
    normalize_inputs: bool = True
    base: SGDRecipe = QUICK_BASE_SGD


class FrozenBackbone:
    """A frozen feature extractor ``images -> (N, out_dim)`` and ``key``, which identifies its
    features exactly (weights, architecture, arguments, view)."""

    def __init__(self, network: nn.Module, key: str, out_dim: int, ctx: Context):
        self.network = network.eval().requires_grad_(False)
        self.key = key
        self.out_dim = out_dim
        self.ctx = ctx
        self.counts = ctx.extra.setdefault("feature_extraction", {"images_embedded": 0})
        self.counts["key"] = key

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.counts["images_embedded"] += len(images)
        return self.network(images).float()

    def features(self, data: LabelledImages) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time-view features of ``data`` and their labels, cached on disk."""
        return cached_features(self.ctx, self, self.key, data, tag="eval")

    def memo(self) -> FrozenFeatureMemo:
        """A memo of test-image features shared, through the disk, by every run on this backbone."""
        return FrozenFeatureMemo(self, store=FeatureStore(self.ctx.cache_dir / "features" / f"memo-{self.key}"))


def _architecture(weights: LocalWeights, backbone: str | None) -> str:
    name = backbone or weights.backbone
    if not name:
        raise WeightsError(f"pretrained weights from the file {weights.path} need the backbone they fit: set backbone "
                           "(e.g. 'timm:vit_base_patch16_224', 'open_clip:ViT-B-16' or 'resnet18')")
    return name


def _arguments(weights: LocalWeights, backbone: str, args: tuple[tuple[str, Any], ...] | None) -> dict[str, Any]:
    if args is not None:
        return dict(args)
    spec = weights.spec
    return dict(spec.backbone_args) if spec is not None and spec.backbone == backbone else {}


def feature_key(weights: LocalWeights, backbone: str, args: Mapping[str, Any], normalize_inputs: bool) -> str:
    """What identifies a frozen pretrained network's features: the weights' sha256, the
    architecture, its arguments and whether inputs are normalised (the rest of the view follows
    from the architecture)."""
    return stable_hash({"sha256": weights.sha256, "backbone": backbone, "args": dict(args),
                        "normalize_inputs": normalize_inputs, "code": FROZEN_FEATURES_VERSION}, length=24)


def note_weights(ctx: Context, weights: LocalWeights, **details: Any) -> None:
    """Record the weights (name, file, sha256, training data, overlaps) and how they were used."""
    ctx.extra["pretrained"] = {**weights.describe(), **details}
    ctx.extra["extra_data"] = f"pretrained weights {weights.name}: {weights.trained_on}"


def pretrained_backbone(ctx: Context, pretrained: str, source: Normalization, backbone: str | None = None,
                        backbone_args: tuple[tuple[str, Any], ...] | None = None,
                        normalize_inputs: bool = True) -> FrozenBackbone:
    """The frozen network of ``pretrained`` weights, fed images normalised with ``source`` (the
    benchmark's normalisation). Raises :class:`WeightsError` with one line for missing, altered
    or unfitting weights."""
    weights = resolve_weights(pretrained, ctx.weights_dir or ctx.cache_dir / "weights")
    arch = _architecture(weights, backbone)
    args = _arguments(weights, arch, backbone_args)
    if library_of(arch):
        network, out_dim, view, library = build_library_network(arch, weights, args)
        view = replace(view, normalize=normalize_inputs)
        network = ViewAdapter(network, out_dim, source, view)
        note_weights(ctx, weights, backbone=arch, library=library, view=view.describe())
    else:
        normalize_inputs = True  # a torchvision-style network sees the benchmark's own view
        network = backbone_init(ctx, arch, pretrained).build()
        out_dim = network.out_dim
        note_weights(ctx, weights, backbone=arch, library="torchvision-style state_dict", view="the benchmark's own")
    return FrozenBackbone(network.to(ctx.device), feature_key(weights, arch, args, normalize_inputs), out_dim, ctx)


def frozen_backbone_recipes(ctx: Context, hp: Any) -> list[dict[str, Any]]:
    """The base-model recipes :func:`frozen_backbone` hands the cache under ``hp`` (for a method's
    ``base_model_recipes``): none for pretrained weights, else the shared cross-entropy base model's."""
    if getattr(hp, "pretrained", None):
        return []
    return [cross_entropy_recipe_for(ctx, _base_model_backbone(hp), getattr(hp, "base", QUICK_BASE_SGD))]


def _base_model_backbone(hp: Any) -> str:
    name = getattr(hp, "backbone", None) or QUICK_BACKBONE
    if library_of(name):
        raise ValueError(f"backbone {name!r} needs pretrained weights: set pretrained")
    return name


def frozen_backbone(session: Session, ctx: Context, hp: Any) -> FrozenBackbone:
    """The frozen backbone named by a method's hyperparameters (the fields of
    :class:`FrozenBackboneHparams`): pretrained weights, or the shared base model."""
    if getattr(hp, "pretrained", None):
        return pretrained_backbone(ctx, hp.pretrained, session.train.eval_transform.norm, getattr(hp, "backbone", None),
                                   getattr(hp, "backbone_args", None), getattr(hp, "normalize_inputs", True))
    network = cross_entropy_base_model(session, ctx, _base_model_backbone(hp), getattr(hp, "base", QUICK_BASE_SGD)).backbone
    return FrozenBackbone(network, ctx.extra["base_model"]["key"], network.out_dim, ctx)


@dataclass(frozen=True)
class LibraryBackboneInit(BackboneInit):
    """A library backbone (``timm:...`` / ``open_clip:...``) loaded from ``weights`` and fed its own view
    of images normalised with ``source``; it is built frozen (no stage of it is ever trained)."""

    args: tuple[tuple[str, Any], ...] = ()
    source: Normalization | None = None
    normalize_inputs: bool = True

    @property
    def extra_identity(self) -> dict[str, Any]:
        return {"library_args": dict(self.args), "normalize_inputs": self.normalize_inputs,
                "frozen_features": FROZEN_FEATURES_VERSION}

    @property
    def feature_key(self) -> str | None:
        """The key of its features, shared with :func:`pretrained_backbone` on the same weights."""
        if self.weights is None:
            return None
        return feature_key(self.weights, self.name, dict(self.args), self.normalize_inputs)

    def build(self) -> nn.Module:
        if self.weights is None or self.source is None:
            raise ValueError(f"backbone {self.name!r} needs pretrained weights and the benchmark's normalisation")
        network, out_dim, view, _ = build_library_network(self.name, self.weights, dict(self.args))
        return ViewAdapter(network, out_dim, self.source, replace(view, normalize=self.normalize_inputs))


class LibraryBackbones:
    """Mixin for :class:`fscil_bench.toolkit.neck_learner.NeckLearner` subclasses: a ``backbone``
    named ``timm:<model>`` or ``open_clip:<config>`` is built by the library adapters from
    ``pretrained`` (required; keep ``train_backbone=False``: it is a frozen feature extractor)."""

    def initial_backbone(self, ctx: Context, session: Session | None = None) -> BackboneInit:
        hp = ctx.hparams
        if not library_of(hp.backbone):
            return super().initial_backbone(ctx, session)  # type: ignore[misc]
        if not hp.pretrained:
            raise ValueError(f"backbone {hp.backbone!r} needs pretrained weights: set pretrained")
        if hp.train_backbone:
            raise ValueError(f"backbone {hp.backbone!r} stays frozen: set train_backbone=False")
        weights = resolve_weights(hp.pretrained, ctx.weights_dir or ctx.cache_dir / "weights")
        args = _arguments(weights, hp.backbone, getattr(hp, "backbone_args", None))
        init = LibraryBackboneInit(hp.backbone, weights, -1, tuple(sorted(args.items())),
                                   session.train.eval_transform.norm if session is not None else None,
                                   getattr(hp, "normalize_inputs", True))
        note_weights(ctx, weights, backbone=hp.backbone, args=args)
        return init


class FrozenFeatureMethod(MethodBase):
    """A method that learns only on a frozen backbone's features (the hyperparameters carry the
    fields of :class:`FrozenBackboneHparams`).

    Each session's training features (test-time view) are computed once, through the cache, and
    handed to :meth:`learn`; test images are embedded through the backbone's memo, then mapped by
    :meth:`project` into the space :meth:`classify` works in (``predict = classify(embed(x))``).
    """

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        return frozen_backbone_recipes(ctx, ctx.hparams)

    def fit_base(self, session: Session, ctx: Context) -> None:
        self.backbone = frozen_backbone(session, ctx, ctx.hparams)
        self.test_features = self.backbone.memo()
        self.setup(ctx)
        self.fit_session(session, ctx)

    @torch.no_grad()
    def fit_session(self, session: Session, ctx: Context) -> None:
        features, labels = self.backbone.features(session.train)
        self.learn(features.to(ctx.device), labels.to(ctx.device), session, ctx)

    def setup(self, ctx: Context) -> None:
        """Prepare the classifier once the backbone is known (``self.backbone.out_dim``)."""

    def learn(self, features: torch.Tensor, labels: torch.Tensor, session: Session, ctx: Context) -> None:
        raise NotImplementedError

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features -> the features the classifier acts on (unchanged by default)."""
        return features

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.test_features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(images))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
