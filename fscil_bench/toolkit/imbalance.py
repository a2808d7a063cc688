"""Training under class imbalance: Balanced Softmax, CMO's minority CutMix, IMB-SAM.

The three fixes that Joint_FSCIL's strongest joint training combines (Kim et al., arXiv
2503.10003; shiwonkim/Joint_FSCIL@dc98067, ``scripts/*/run_oracle.sh``):

* **Balanced Softmax** (Ren et al., NeurIPS 2020; ``utils/losses.py:34-48``): the cross-entropy
  of ``logits + log(n_c / sum n)``, with ``n_c`` the training samples of class ``c``.
* **CMO** (Park et al., CVPR 2022; ``models/joint.py:231-325``): a second batch is drawn with
  replacement, each sample with probability proportional to ``1 / n_y`` (so classes come
  uniformly, :func:`minority_draw`); with probability ``p`` a batch takes a CutMix box from it
  (:func:`paste_minority`: ``lambda ~ Beta(beta, beta)``, the box of
  :func:`fscil_bench.data.mixing.cutmix_box`, ``lambda`` then ``1 -`` the box's share of the
  image), and its loss is ``lambda L(y) + (1 - lambda) L(y2)``.
* **IMB-SAM** (``utils/losses.py:77-179``, :func:`imbalanced_sam_step`): sharpness-aware
  minimisation of the tail classes' loss only. With per-sample losses ``l_i`` over a batch of
  ``b`` and ``T`` its tail samples (a mixed sample is tail when either label is), the head part
  ``sum_{i not in T} l_i / b`` gets its plain gradient ``g_h``; the tail part
  ``2 sum_{i in T} l_i / b`` is evaluated again at ``w + rho g_t / |g_t|`` (``g_t`` its gradient,
  the norm over all parameters), whose gradient ``g_t'`` is taken back at ``w``; the optimiser
  steps with ``g_h + g_t'``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fscil_bench.data.mixing import cutmix_box


def log_prior(counts: torch.Tensor) -> torch.Tensor:
    """``log(n_c / sum n)`` of per-class sample counts."""
    counts = counts.float()
    return (counts / counts.sum()).log()


def balanced_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Per-sample Balanced-Softmax cross-entropy (``prior``: :func:`log_prior` of the seen classes)."""
    return F.cross_entropy(logits + prior, labels, reduction="none")


def minority_draw(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` sample indices drawn with replacement, each sample weighted ``1 / n_y`` (CMO's sampler)."""
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].double()
    return torch.multinomial(weights, n, replacement=True, generator=generator)


@dataclass(frozen=True)
class MixedTargets:
    """Labels of a batch, with the partners' labels and the weight ``lam`` of the first set
    (``partners`` None: an unmixed batch)."""

    labels: torch.Tensor
    partners: torch.Tensor | None = None
    lam: float = 1.0

    def loss(self, per_sample: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``lam per_sample(labels) + (1 - lam) per_sample(partners)``."""
        if self.partners is None:
            return per_sample(self.labels)
        return self.lam * per_sample(self.labels) + (1 - self.lam) * per_sample(self.partners)

    def involves(self, classes: torch.Tensor) -> torch.Tensor:
        """Per sample: whether either of its labels is one of ``classes``."""
        hit = torch.isin(self.labels, classes)
        return hit if self.partners is None else hit | torch.isin(self.partners, classes)


def paste_minority(images: torch.Tensor, labels: torch.Tensor, minority: torch.Tensor, minority_labels: torch.Tensor,
                   beta: float, rng: np.random.Generator, generator: torch.Generator) -> tuple[torch.Tensor, MixedTargets]:
    """CMO's CutMix: every image takes the same box from its minority partner (module docstring)."""
    lam = float(rng.beta(beta, beta))
    h, w = images.shape[-2:]
    top, bottom, left, right = cutmix_box(h, w, lam, generator)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = minority[..., top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, MixedTargets(labels, minority_labels, lam)


def imbalanced_sam_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                        per_sample_losses: Callable[[], torch.Tensor], tail: torch.Tensor, rho: float) -> torch.Tensor:
    """One IMB-SAM update (module docstring). ``per_sample_losses()`` runs the forward pass on the
    batch and returns its per-sample losses; it is called twice. Returns the loss it stepped on
    (head part at ``w`` plus tail part at the perturbed weights)."""
    losses = per_sample_losses()
    b, tail = len(losses), tail.float()
    head_loss = (losses * (1 - tail)).sum() / b
    tail_loss = 2 * (losses * tail).sum() / b
    head_grads = torch.autograd.grad(head_loss, params, retain_graph=True, allow_unused=True)
    tail_grads = torch.autograd.grad(tail_loss, params, allow_unused=True)
    norm = torch.norm(torch.stack([g.norm() for g in tail_grads if g is not None])) + 1e-16
    steps = [None if g is None else g * (rho / norm) for g in tail_grads]
    with torch.no_grad():
        for p, e in zip(params, steps):
            if e is not None:
                p.add_(e)
    perturbed_tail_loss = 2 * (per_sample_losses() * tail).sum() / b
    perturbed_grads = torch.autograd.grad(perturbed_tail_loss, params, allow_unused=True)
    with torch.no_grad():
        for p, e, g_h, g_t in zip(params, steps, head_grads, perturbed_grads):
            if e is not None:
                p.sub_(e)
            grads = [g for g in (g_h, g_t) if g is not None]
            p.grad = torch.stack(grads).sum(0) if grads else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return (head_loss + perturbed_tail_loss).detach()
