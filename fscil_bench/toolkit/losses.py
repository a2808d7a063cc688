"""Losses shared by methods.

Dot regression (DR), from Yang et al., "Neural Collapse Inspired Feature-Classifier Alignment
for Few-Shot Class Incremental Learning" (NC-FSCIL), ICLR 2023. For a batch of ``B`` unit-norm
features ``h_i`` with labels ``y_i`` and fixed unit-norm prototypes ``w_k`` (the columns of a
simplex ETF):

    L_DR = 1/2 * mean_i (h_i^T w_{y_i} - 1)^2

It pulls each feature onto its own prototype only (no term pushes it from the others: the fixed
ETF already keeps the prototypes apart), so its gradient ``(h_i^T w_{y_i} - 1) w_{y_i} / B`` vanishes
once the feature is aligned.

Inverse-frequency reweighting (used by NC-FSCIL in CIFAR-100's incremental sessions, where a
batch mixes many few-shot samples with one mean feature per old class): sample ``i`` gets the
weight

    a_i = B / (C * n_{y_i}),

where ``n_c`` is the number of samples of class ``c`` in the batch and ``C`` the number of
distinct classes in it. The weights average to 1, and ``mean_i a_i l_i`` equals the mean over the
batch's classes of each class's mean loss: every class present counts the same, however many
samples it has. A balanced batch gets every weight equal to 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def inverse_frequency_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights ``a_i = B / (C * n_{y_i})`` (see the module docstring); they average to 1."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return len(labels) / (len(counts) * counts[inverse].to(torch.float32))


def _weighted_mean(values: torch.Tensor, labels: torch.Tensor, reweight: bool) -> torch.Tensor:
    if not reweight:
        return values.mean()
    return (inverse_frequency_weights(labels).to(values) * values).mean()


def dot_regression_loss(
    features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, reweight: bool = False
) -> torch.Tensor:
    """``1/2 * mean_i a_i (h_i^T w_{y_i} - 1)^2`` with ``a_i = 1``, or the inverse-frequency weights
    when ``reweight``.

    Args:
        features: ``(B, d)`` features ``h_i``, expected to be L2-normalised already (the loss does
            not normalise them).
        labels: ``(B,)`` class ids ``y_i``.
        prototypes: ``(d, K)`` fixed prototypes, class ``k`` in column ``k`` (e.g. a simplex ETF).
    """
    dots = (features * prototypes[:, labels].T).sum(dim=1)
    return _weighted_mean(0.5 * (dots - 1.0) ** 2, labels, reweight)


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, reweight: bool = False) -> torch.Tensor:
    """Cross-entropy, averaged over the batch with the inverse-frequency weights when ``reweight``."""
    return _weighted_mean(F.cross_entropy(logits, labels, reduction="none"), labels, reweight)
