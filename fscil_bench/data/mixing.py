"""Batch Mixup and CutMix: mix a normalised training batch with a permutation of itself.

The semantics are mmcls's ``BatchAugments`` as NC-FSCIL configures them (Yang et al., ICLR 2023;
NeuralCollapseApplications/FSCIL@37a5475 ``mmfscil/augments``, mmcls 0.23.2
``models/utils/augment``): for every batch one of Mixup, CutMix and the identity is chosen with
``probs``; the batch is mixed with a random permutation ``perm`` of itself, and the result
carries both label sets and the mixing weight ``lambda`` of the original labels.

* Mixup: ``lambda ~ Beta(a, a)``; ``x' = lambda x + (1 - lambda) x[perm]``.
* CutMix: ``lambda ~ Beta(a, a)``; a box of ``int(H sqrt(1 - lambda))`` x ``int(W sqrt(1 - lambda))``
  pixels around a centre ``(cy, cx)`` uniform over the pixels, its bounds
  ``[cy - h // 2, cy + h // 2)`` (likewise for x) clipped to the image; every image takes the
  box of image ``perm[i]``, and ``lambda`` becomes ``1 - box area / (H W)`` (after clipping).
* Identity: the batch unchanged, with no second label set.

``group`` permutes within consecutive groups of that many samples (NC-FSCIL mixes each GPU's
64 images among themselves). The random numbers come from the caller's generator: the choice,
``lambda`` (Beta draws through a NumPy generator seeded from it), the permutation and the box.

Losses (:meth:`BatchMix.loss`): the usual rule is ``lambda L(y) + (1 - lambda) L(y[perm])``; NC-FSCIL's
code adds the plain loss once more, ``(1 + lambda) L(y) + (1 - lambda) L(y[perm])``
(``rule="nc-fscil"``; its ``mmfscil/models/classifier.py:132-179``). An identity batch gets ``L(y)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("mixup", "cutmix", "identity")
RULES = ("standard", "nc-fscil")


@dataclass(frozen=True)
class MixedBatch:
    """A mixed batch: ``images``, the original ``labels`` (weight ``lam``) and the partners'
    ``mixed_labels`` (weight ``1 - lam``); ``mixed_labels`` and ``lam`` are None for the identity."""

    images: torch.Tensor
    labels: torch.Tensor
    mixed_labels: torch.Tensor | None
    lam: float | None
    kind: str


def grouped_permutation(n: int, group: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """A random permutation of ``range(n)`` that maps each consecutive block of ``group`` indices
    (the last block may be shorter) onto itself; one permutation of everything when ``group`` is None."""
    if group is None or group >= n:
        return torch.randperm(n, generator=generator)
    parts = [start + torch.randperm(min(group, n - start), generator=generator) for start in range(0, n, group)]
    return torch.cat(parts)


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the CutMix box for ``lam`` (module docstring), end-exclusive."""
    ratio = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    top, bottom = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    left, right = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    return top, bottom, left, right


@dataclass(frozen=True)
class BatchMix:
    """Batch Mixup / CutMix / identity (module docstring).

    Attributes:
        mixup_alpha, cutmix_alpha: the Beta parameters.
        probs: the probabilities of Mixup, CutMix and the identity (they sum to 1).
        group: permute within consecutive groups of this many samples (None: the whole batch).
        rule: how :meth:`loss` combines the two label sets, ``"standard"`` or ``"nc-fscil"``.
    """

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    probs: tuple[float, float, float] = (0.4, 0.4, 0.2)
    group: int | None = None
    rule: str = "standard"

    def __post_init__(self) -> None:
        if len(self.probs) != 3 or abs(sum(self.probs) - 1.0) > 1e-9 or min(self.probs) < 0:
            raise ValueError(f"probs must be three non-negative probabilities summing to 1, not {self.probs}")
        if self.rule not in RULES:
            raise ValueError(f"unknown mixing loss rule {self.rule!r}; choose from {', '.join(RULES)}")

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None) -> MixedBatch:
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        kind = KINDS[0] if u < self.probs[0] else KINDS[1] if u < self.probs[0] + self.probs[1] else KINDS[2]
        if kind == "identity":
            return MixedBatch(images, labels, None, None, kind)
        lam = _beta(self.mixup_alpha if kind == "mixup" else self.cutmix_alpha, generator)
        perm = grouped_permutation(len(labels), self.group, generator).to(images.device, non_blocking=True)
        partners = images[perm]
        if kind == "mixup":
            mixed = lam * images + (1 - lam) * partners
        else:
            h, w = images.shape[-2:]
            top, bottom, left, right = cutmix_box(h, w, lam, generator)
            mixed = images.clone()
            mixed[..., top:bottom, left:right] = partners[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (h * w)
        return MixedBatch(mixed, labels, labels[perm], lam, kind)

    def loss(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], outputs: torch.Tensor,
             batch: MixedBatch) -> torch.Tensor:
        """The training loss of ``outputs`` on a mixed ``batch`` under :attr:`rule`."""
        plain = loss_fn(outputs, batch.labels)
        if batch.mixed_labels is None or batch.lam is None:
            return plain
        first = (1.0 + batch.lam) if self.rule == "nc-fscil" else batch.lam
        return first * plain + (1.0 - batch.lam) * loss_fn(outputs, batch.mixed_labels)
