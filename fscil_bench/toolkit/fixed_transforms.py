"""Fixed image transforms that multiply the label space: rotations and colour-channel permutations.

Self-supervised and "virtual class" methods turn each class into ``m`` classes, one per fixed
transform: image ``x`` of class ``y`` under transform ``j`` is a sample of the joint class
``y * m + j``. S3C (Kalla and Biswas, ECCV 2022) uses the four rotations; SAVC (Song et al.,
CVPR 2023) calls them fantasies and uses a half turn (``rotation2``) or rotations times
colour-channel permutations (``rot_color_perm12``).

Conventions (those of both official codes, JAYATEJAK/S3C@a1003da ``models/s3c/helper.py:18-20``
and zysong0113/SAVC@1543c9c ``augmentations/fantasy.py``):

* A rotation by ``k`` quarter turns is ``torch.rot90(x, k, dims=(2, 3))`` (counter-clockwise).
* A channel permutation ``p`` makes output channel ``c`` the input channel ``p[c]``; it acts on the
  normalised tensor, after the rotation.
* :meth:`TransformSet.expand` orders the output image-major: row ``i * m + j`` is image ``i`` under
  transform ``j``; :meth:`TransformSet.joint_labels` gives ``y_i * m + j`` in the same order.
* :meth:`TransformSet.aggregate` scores class ``c`` for image ``i`` by the mean over ``j`` of the
  logit of row ``i * m + j`` for joint class ``c * m + j``: each transformed copy is scored only
  against its own transform's classifier rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fscil_bench.registry import Registry

IDENTITY_CHANNELS = (0, 1, 2)


@dataclass(frozen=True)
class FixedTransform:
    """``quarter_turns`` counter-clockwise rotations, then the channel permutation ``channels``."""

    quarter_turns: int = 0
    channels: tuple[int, int, int] = IDENTITY_CHANNELS

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.quarter_turns % 4:
            x = torch.rot90(x, self.quarter_turns, dims=(2, 3))
        if self.channels != IDENTITY_CHANNELS:
            x = x[:, list(self.channels)]
        return x


@dataclass(frozen=True)
class TransformSet:
    """``m`` fixed transforms and the joint-label bookkeeping around them (module docstring)."""

    name: str
    transforms: tuple[FixedTransform, ...]

    @property
    def size(self) -> int:
        return len(self.transforms)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """``(B * m, ...)``: every image under every transform, image-major."""
        if self.size == 1 and self.transforms[0] == FixedTransform():
            return x
        return torch.stack([t(x) for t in self.transforms], dim=1).flatten(0, 1)

    def joint_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B * m,)`` joint labels ``y * m + j``, in :meth:`expand`'s order."""
        offsets = torch.arange(self.size, device=labels.device)
        return (labels.view(-1, 1) * self.size + offsets).flatten()

    def aggregate(self, logits: torch.Tensor, num_classes: int) -> torch.Tensor:
        """``(B, num_classes)`` from the ``(B * m, >= num_classes * m)`` joint logits of
        :meth:`expand`'s rows: ``mean_j logits[i * m + j, c * m + j]``."""
        m = self.size
        joint = logits[:, : num_classes * m].reshape(-1, m, num_classes, m)
        return torch.diagonal(joint, dim1=1, dim2=3).mean(-1)

    def aggregated_cosine(self, features: torch.Tensor, rows: torch.Tensor, num_classes: int,
                          scale: float) -> torch.Tensor:
        """:meth:`aggregate` of cosine logits, from features ``(B, m * d)`` that hold the ``m``
        transformed copies of each image side by side and classifier ``rows`` (row ``c * m + j``):
        ``mean_j scale cos(block_j, rows[c * m + j])``, without the off-diagonal logits."""
        m = self.size
        blocks = F.normalize(features.view(len(features), m, -1), dim=-1)
        per_transform = F.normalize(rows[: num_classes * m].view(num_classes, m, -1), dim=-1)
        return scale * torch.einsum("bjd,cjd->bc", blocks, per_transform) / m


def _rotations(*turns: int) -> tuple[FixedTransform, ...]:
    return tuple(FixedTransform(k) for k in turns)


#: SAVC's ``rot_color_perm12`` channel orders: unchanged, (G, B, R) and (B, R, G).
COLOUR_CYCLES = ((0, 1, 2), (1, 2, 0), (2, 0, 1))

TRANSFORM_SETS: Registry[TransformSet] = Registry("fixed transform set")
for _set in (
    TransformSet("identity", _rotations(0)),
    TransformSet("rotation2", _rotations(0, 2)),
    TransformSet("rotation4", _rotations(0, 1, 2, 3)),
    TransformSet("rot_color_perm12", tuple(FixedTransform(k, p) for k in range(4) for p in COLOUR_CYCLES)),
):
    TRANSFORM_SETS.add(_set.name, _set)


def transform_set(name: str) -> TransformSet:
    """The transform set called ``name`` (:data:`TRANSFORM_SETS`)."""
    return TRANSFORM_SETS.get(name)
