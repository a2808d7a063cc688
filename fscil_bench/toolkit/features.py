"""Features of networks: extraction, class means, augmented views, and caches of frozen features.

:func:`extract_features` runs a network over a set under the test-time transform;
:func:`feature_views` adds views under the training augmentation; :func:`class_means` averages
features per class.

Several methods start from the same cached base model (:mod:`fscil_bench.base_models`) and need
its features of the same base-session images (a herding pool, class prototypes, a pool of
pseudo-incremental episodes). :func:`cached_features` computes them once and loads them after.
The key covers the network's own cache key, a digest of the exact images and labels, the
feature-extraction code version and a caller's tag, so a different model, different images or
a different transform never reads a stale entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fscil_bench.cache import load_arrays, save_arrays, stable_hash
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.protocol import Context
from fscil_bench.toolkit.exemplars import labelled_images, subsample_per_class
from fscil_bench.toolkit.feature_store import FeatureStore

FEATURE_CODE_VERSION = 1


@torch.no_grad()
def extract_features(
    network: Callable[[torch.Tensor], torch.Tensor], data: LabelledImages, ctx: Context, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every sample of ``data`` under the test-time transform, and their labels."""
    if isinstance(network, nn.Module):
        network.eval()
    feats, labels = [], []
    for x, y in data.batches(batch_size, augment=False, device=ctx.device):
        feats.append(network(x))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def class_means(features: torch.Tensor, labels: torch.Tensor, classes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Row ``i`` is the mean feature of class ``classes[i]``."""
    rows = []
    for c in classes:
        mask = labels == c
        if not mask.any():
            raise ValueError(f"no sample of class {c} to average")
        rows.append(features[mask].mean(0))
    return torch.stack(rows)


@torch.no_grad()
def feature_views(
    network: Callable[[torch.Tensor], torch.Tensor], data: LabelledImages, ctx: Context, views: int,
    generator: torch.Generator, batch_size: int = 256,
) -> torch.Tensor:
    """Features ``(N, 1 + views, d)`` of every sample of ``data``: view 0 under the test-time
    transform, then ``views`` passes under the training augmentation drawn from ``generator``
    (in sample order, so a seeded generator gives the same views)."""
    if isinstance(network, nn.Module):
        network.eval()
    out = [extract_features(network, data, ctx, batch_size)[0]]
    for _ in range(views):
        out.append(torch.cat([network(x) for x, _ in data.batches(batch_size, augment=True, shuffle=False,
                                                                 generator=generator, device=ctx.device)]))
    return torch.stack(out, dim=1)


def cached_features(
    ctx: Context,
    network: Callable[[torch.Tensor], torch.Tensor],
    network_key: str,
    data: LabelledImages,
    tag: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time-transform features of ``data`` under ``network`` and their labels.

    ``network_key`` must identify the network's weights exactly (e.g. the base model's cache
    key, ``ctx.extra["base_model"]["key"]``). Entries live under ``ctx.cache_dir/features``.
    """
    key = stable_hash({"network": network_key, "data": data.digest(), "tag": tag,
                       "transform": repr(data.eval_transform), "code": FEATURE_CODE_VERSION})
    path = ctx.cache_dir / "features" / f"{key}.npz"
    arrays = load_arrays(path)
    if arrays is not None:
        return torch.from_numpy(arrays["features"]).to(ctx.device), torch.from_numpy(arrays["labels"]).to(ctx.device)
    feats, labels = extract_features(network, data, ctx)
    save_arrays(path, {"features": feats.cpu().numpy(), "labels": labels.cpu().numpy()})
    return feats, labels


def base_feature_pool(
    ctx: Context,
    data: LabelledImages,
    network: Callable[[torch.Tensor], torch.Tensor],
    network_key: str,
    per_class: int | None,
) -> tuple[LabelledImages, torch.Tensor, torch.Tensor]:
    """A seeded pool of ``per_class`` images per class of ``data`` (all when None), with their
    cached features and labels. The pool depends only on the run's seed and ``per_class``, so
    methods asking for the same pool of the same network share one cache entry."""
    generator = torch.Generator().manual_seed(ctx.stage_seed("base-feature-pool", per_class))
    picks = subsample_per_class(data.labels, per_class, generator)
    pool = data if per_class is None else labelled_images(data.raw_images[picks], data.labels[picks], data)
    feats, labels = cached_features(ctx, network, network_key, pool, tag="eval")
    return pool, feats, labels


class FrozenFeatureMemo:
    """Remembers a frozen network's feature of every input it has seen, sample by sample.

    FSCIL evaluates after every session on the test images of all seen classes, so a method
    whose backbone is frozen after the base session would run the same backbone over the same
    base-class test images nine times. Wrapped in this memo, the backbone runs once per distinct
    image: each sample is keyed by a digest of its exact input tensor (after the test transform),
    so an image it has not seen, or one transformed differently, is computed afresh.

    Only wrap a network whose weights and BatchNorm statistics no longer change; call
    :meth:`clear` if they do. Use it under ``torch.no_grad()``: the memo keeps no graph.

    With a ``store`` (:class:`fscil_bench.toolkit.feature_store.FeatureStore`, whose folder must
    identify the network exactly) the memo starts from the features stored by earlier runs and
    stores what it computes, so a frozen pretrained backbone embeds each test image once across
    runs and methods.
    """

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], store: FeatureStore | None = None):
        self.network = network
        self.store = store
        self._features: dict[bytes, torch.Tensor] = {}
        self._stored: dict[bytes, torch.Tensor] | None = None  # loaded from the store on first use

    def __len__(self) -> int:
        return len(self._features)

    def clear(self) -> None:
        self._features.clear()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        keys = _sample_keys(images)
        if self.store is not None and self._stored is None:
            self._stored = self.store.load()
        missing = []
        for i, key in enumerate(keys):
            if key in self._features:
                continue
            if self._stored and key in self._stored:
                self._features[key] = self._stored.pop(key).to(images.device)
            else:
                missing.append(i)
        if missing:
            computed = self.network(images[missing])
            for i, feature in zip(missing, computed):
                self._features[keys[i]] = feature
            if self.store is not None:
                self.store.add([keys[i] for i in missing], computed)
        return torch.stack([self._features[key] for key in keys])


def _sample_keys(images: torch.Tensor) -> list[bytes]:
    """A 16-byte digest per sample of its dtype, shape and values (sha256, which is hardware-
    accelerated on most current CPUs; NOTES.md compares it with blake2b)."""
    prefix = hashlib.sha256(f"{images.dtype} {tuple(images.shape[1:])}".encode())
    keys = []
    for row in _rows_in_channels_last_order(images):
        digest = prefix.copy()
        digest.update(row)
        keys.append(digest.digest()[:16])
    return keys


def _rows_in_channels_last_order(images: torch.Tensor) -> np.ndarray:
    """One C-contiguous row per sample holding its values in a fixed order whatever the memory
    format: (H, W, C) for 4-D images, so the channels-last batches of the batch transforms are
    keyed without a copy; a contiguous copy for anything else. Keys are thus independent of the
    memory layout."""
    host = images.detach().to("cpu")
    if host.dim() == 4:
        host = host.permute(0, 2, 3, 1)
    return host.contiguous().numpy().reshape(len(host), -1)
