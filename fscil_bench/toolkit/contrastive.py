"""Supervised momentum contrast: a labelled key queue, the momentum update and the supervised loss.

MoCo (He et al., CVPR 2020) scores a query against its own key, computed by a slowly moving copy
of the network, and against a queue of earlier keys. The supervised variant (UniMoCo; SAVC, Song
et al., CVPR 2023, zysong0113/SAVC@1543c9c ``models/savc/Network.py:44-164``, ``losses.py``) also
stores each key's label, and counts as positives the query's own key and every queued key of the
query's label.

For one anchor with logits ``s`` (query-key similarities over the temperature), positives ``P``
and negatives ``N`` (every other entry)::

    L = (1 / |P|) sum_{p in P} log(1 + sum_{n in N} exp(s_n - s_p))

:func:`sup_contrastive_loss` averages it over the anchors, computed as
``softplus(logsumexp_N(s) - s_p)`` so that it never overflows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LabelledQueue(nn.Module):
    """A FIFO queue of ``size`` unit-norm keys of ``dim`` dimensions and their labels. It starts
    with normalised Gaussian noise labelled -1 (never a positive), as MoCo's does."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Overwrite the oldest entries with ``keys`` and ``labels`` (wrapping around the end)."""
        size = len(self.labels)
        slots = (int(self.pointer) + torch.arange(len(labels), device=labels.device)) % size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.labels[slots] = labels
        self.pointer.fill_((int(self.pointer) + len(labels)) % size)

    def positives(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B, size)``: which queued keys share each of ``labels`` (never the empty -1 slots)."""
        return (self.labels.view(1, -1) == labels.view(-1, 1)) & (labels.view(-1, 1) != -1)


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``theta_target <- momentum theta_target + (1 - momentum) theta_source``, parameter by
    parameter (buffers, e.g. BatchNorm statistics, stay the target's own)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


def sup_contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """The supervised contrastive loss of the module docstring; ``positives`` is a boolean mask of
    ``logits``' shape with at least one entry per row."""
    negatives = logits.masked_fill(positives, float("-inf")).logsumexp(dim=1, keepdim=True)
    per_positive = F.softplus(negatives - logits) * positives
    return (per_positive.sum(1) / positives.sum(1)).mean()
