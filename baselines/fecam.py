"""FeCAM: per-class Mahalanobis distance with shrunk, normalised covariances on frozen features.

Goswami, Liu, Twardowski and van de Weijer, "FeCAM: Exploiting the Heterogeneity of Class
Distributions in Exemplar-Free Continual Learning", NeurIPS 2023, code
https://github.com/dipamgoswami/FeCAM. Nothing is trained. Every class keeps the mean ``mu_c`` of
its L2-normalised features and a covariance ``S_c`` (unbiased, ``N - 1``), shrunk as
``S + a1 * mean(diag S) * I + a2 * mean_offdiag(S) * (1 - I)`` (``mean_offdiag`` over the non-zero
off-diagonal entries) and normalised to unit diagonal (``S / (sd sd^T)``). A test feature ``x``
(L2-normalised) gets the logit ``-(x - mu_c)^T pinv(S_c) (x - mu_c)`` (squared distance, argmin).

Presets. ``paper`` is the official frozen-ViT recipe (FeCAM@d2479b7 ``FeCAM_vit_cifar100.py``):
ViT-B/16 pretrained on ImageNet-21k (``timm.create_model("vit_base_patch16_224_in21k")``), the
normalised class token (``F.normalize(forward_features(x)[:, 0])``), ``a1 = 1, a2 = 0``
(``shrink_cov``; the same for every benchmark family here: FeCAM's ViT scripts cover neither
miniImageNet nor CUB-200, and use ``a1 = a2 = 10`` for ImageNet-R, so our choice), ``normalize_cov``,
``np.linalg.pinv``, no Tukey transform (the ViT scripts have
none), inputs ``ToTensor`` + resize, not normalised (``normalize_inputs=False``). The weights
file is our choice, as in ``simplecil``. Few-shot classes: the FeCAM repository has no FSCIL
code; the covariance of a novel class comes from its shots alone, then the same shrinkage
(``novel_covariance="shots"``, what FSCIL-Calibration, by the same first author, evaluates as
FeCAM). ``novel_covariance="base-mix"`` (our choice, not the default) adds the base classes'
covariances weighted by ``softmax(16 cos(mu_new, mu_b))``, FSCIL-Calibration@fc4c232
``models/adam_adapter.py`` covariance calibration, without its prototype calibration. A class with
a single shot has no sample covariance: with ``shots`` it gets the identity (our choice: Euclidean
distance). Covariances are computed in float64 (numpy's default in the official code).
``pretrained`` uses the backbone's own normalisation; ``quick`` and ``smoke`` the shared base model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fscil_bench import Context, MemoryDeclaration, Session
from fscil_bench.integrations.pretrained import FrozenBackboneHparams, FrozenFeatureMethod
from fscil_bench.toolkit.base_models import SMOKE_BASE_SGD


@dataclass(frozen=True)
class FeCAMHparams(FrozenBackboneHparams):
    alpha1: float = 1.0  # shrinkage towards the mean variance
    alpha2: float = 0.0  # shrinkage towards the mean covariance
    novel_covariance: str = "shots"  # "shots" or "base-mix"
    mix_temperature: float = 16.0  # base-mix: softmax temperature over cosine similarities


def shrink(cov: torch.Tensor, alpha1: float, alpha2: float) -> torch.Tensor:
    """FeCAM's shrinkage of one covariance matrix."""
    eye = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    off = cov * (1 - eye)
    nonzero = off != 0
    off_mean = off.sum() / nonzero.sum() if nonzero.any() else off.new_zeros(())
    return cov + alpha1 * cov.diagonal().mean() * eye + alpha2 * off_mean * (1 - eye)


def unit_diagonal(cov: torch.Tensor) -> torch.Tensor:
    """``cov / (sd sd^T)`` with ``sd = sqrt(diag cov)``: the correlation matrix."""
    sd = cov.diagonal().sqrt()
    return cov / torch.outer(sd, sd)


def squared_mahalanobis(x: torch.Tensor, means: torch.Tensor, precisions: torch.Tensor) -> torch.Tensor:
    """``(N, C)``: ``(x_i - mu_c)^T P_c (x_i - mu_c)``."""
    diff = x.unsqueeze(0) - means.unsqueeze(1)  # (C, N, d)
    return (torch.bmm(diff, precisions) * diff).sum(-1).T


class FeCAM(FrozenFeatureMethod):
    name = "fecam"
    paper = ("Goswami et al., FeCAM: Exploiting the Heterogeneity of Class Distributions in Exemplar-Free "
             "Continual Learning, NeurIPS 2023")
    presets = {
        "quick": FeCAMHparams(),
        "smoke": FeCAMHparams(base=SMOKE_BASE_SGD),
        "paper": FeCAMHparams(pretrained="timm-vit-b16-in21k", normalize_inputs=False),
        "pretrained": FeCAMHparams(pretrained="timm-vit-b16-in21k"),
    }

    def setup(self, ctx: Context) -> None:
        hp: FeCAMHparams = ctx.hparams
        if hp.novel_covariance not in ("shots", "base-mix"):
            raise ValueError(f"novel_covariance must be 'shots' or 'base-mix', not {hp.novel_covariance!r}")
        d = self.backbone.out_dim
        self.hp = hp
        self.means = torch.empty(0, d, device=ctx.device)
        self.precisions = torch.empty(0, d, d, device=ctx.device)
        self.base_covs: torch.Tensor | None = None  # raw covariances of the base classes (base-mix)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.float(), dim=1)

    def learn(self, features: torch.Tensor, labels: torch.Tensor, session: Session, ctx: Context) -> None:
        x = self.project(features).double()
        means, covs = [], []
        for c in session.new_classes:
            rows = x[labels == c]
            means.append(rows.mean(0))
            covs.append(torch.cov(rows.T) if len(rows) > 1 else torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype,
                                                                               device=x.device))
        means_t, covs_t = torch.stack(means), torch.stack(covs)
        if session.is_base:
            self.base_covs = covs_t if self.hp.novel_covariance == "base-mix" else None
        elif self.base_covs is not None:
            base_means = self.means[: len(self.base_covs)].double()
            weights = torch.softmax(self.hp.mix_temperature * F.normalize(means_t, dim=1) @ F.normalize(base_means, dim=1).T, 1)
            covs_t = covs_t + torch.einsum("nb,bij->nij", weights, self.base_covs)
        precisions = []
        for cov in covs_t:
            if not cov.any():  # a single shot and nothing to borrow: Euclidean distance
                cov = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
            precisions.append(torch.linalg.pinv(unit_diagonal(shrink(cov, self.hp.alpha1, self.hp.alpha2))))
        self.means = torch.cat([self.means, means_t.float()])
        self.precisions = torch.cat([self.precisions, torch.stack(precisions).float()])

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return -squared_mahalanobis(features, self.means, self.precisions)

    def classifier_weights(self) -> torch.Tensor:
        return self.means

    def memory(self) -> MemoryDeclaration:
        n, d = self.means.shape
        base_covs = 0 if self.base_covs is None else self.base_covs.numel() * self.base_covs.element_size()
        return MemoryDeclaration(feature_vectors=n, bytes=4 * n * (d + d * d) + base_covs,
                                 notes="per seen class: the mean feature and a d x d inverse covariance")
