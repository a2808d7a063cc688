"""Classifier heads and what methods do with them: linear heads that grow, cosine logits.

:class:`BackboneWithHead` is the standard base model (a feature extractor and a linear layer);
:func:`grow_linear` adds rows for a session's new classes, keeping the old ones;
:func:`cosine_logits` scores features against class vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BackboneWithHead(nn.Module):
    """A backbone followed by a linear classifier over ``num_classes`` classes."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class BackboneWithCosineHead(nn.Module):
    """A backbone followed by a cosine classifier: ``scale * cos(f, w_c)`` for ``num_classes``
    bias-free class vectors ``w_c`` (CEC's ``ft_cos`` base classifier, Zhang et al., CVPR 2021;
    icoz69/CEC-CVPR2021@3a5d335 ``models/base/Network.py:29-40``)."""

    def __init__(self, backbone: nn.Module, num_classes: int, scale: float = 16.0):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cosine_logits(self.backbone(x), self.head.weight, self.scale)


class LinearHeadOutputs:
    """``classify`` and ``classifier_weights`` for a method whose ``self.model`` is a
    :class:`BackboneWithHead`: the logits are the linear head's, its weight rows the classifier
    vectors (the method supplies ``embed``)."""

    model: BackboneWithHead

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)

    def classifier_weights(self) -> torch.Tensor:
        return self.model.head.weight.detach()


@torch.no_grad()
def grow_linear(old: nn.Linear, num_classes: int, rows: torch.Tensor | None = None,
                bias: torch.Tensor | float | None = None) -> nn.Linear:
    """A linear layer with ``num_classes`` outputs whose first rows (and biases) are ``old``'s.

    The new rows keep PyTorch's default initialisation unless ``rows`` (``(new, in_features)``)
    and ``bias`` (a tensor or one value for every new class) are given.
    """
    if num_classes < old.out_features:
        raise ValueError(f"a head of {old.out_features} classes cannot shrink to {num_classes}")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device)
    new.weight[: old.out_features] = old.weight
    if old.bias is not None:
        new.bias[: old.out_features] = old.bias
    if rows is not None:
        new.weight[old.out_features :] = rows
    if bias is not None and old.bias is not None:
        new.bias[old.out_features :] = bias
    return new


class LinearClassifier(nn.Module):
    """A learnable linear classifier ``W h + b`` that can grow rows for new classes."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor, num_seen: int | None = None) -> torch.Tensor:
        logits = self.linear(features)
        return logits if num_seen is None else logits[:, :num_seen]

    def weights(self, num_seen: int | None = None) -> torch.Tensor:
        """The ``(classes, dim)`` weight rows (of the first ``num_seen`` classes), without the bias."""
        w = self.linear.weight.detach()
        return w if num_seen is None else w[:num_seen]

    def extend(self, num_classes: int) -> None:
        """Grow to ``num_classes`` outputs; old rows are kept, new rows get the default init."""
        if num_classes > self.linear.out_features:
            self.linear = grow_linear(self.linear, num_classes)


def cosine_logits(features: torch.Tensor, weights: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * cos(feature_i, weight_c)`` for every sample i and class c."""
    return scale * F.normalize(features, dim=1) @ F.normalize(weights, dim=1).T
