"""RanPAC: a frozen random projection of frozen features and a ridge classifier on their Gram matrix.

McDonnell, Gong, Parvaneh, Abbasnejad and van den Hengel, "RanPAC: Random Projections and
Pre-trained Models for Continual Learning", NeurIPS 2023, code https://github.com/RanPAC/RanPAC.
Nothing is trained by gradient. A matrix ``W_rand`` (``d x M``, entries N(0, 1), drawn once)
maps a backbone feature ``f`` to ``h = ReLU(f W_rand)``. Every session adds ``G += H^T H`` and
``Q += H^T Y`` (``Y``: one-hot over all the benchmark's classes); the classifier is
``W = ((G + lambda I)^-1 Q)^T`` and the logits ``h W^T`` over the seen classes. ``lambda`` is chosen
in every session from ``10^-8 .. 10^8`` on that session's features alone: fit on a random 80% of
them, pick the value with the least mean squared error against the one-hot targets of the other
20%; it is then used with the accumulated ``G`` and ``Q``.

Presets. ``paper`` is the frozen-only variant (RanPAC@012927f ``args/*_publish.csv`` row 4:
``model_name=ncm, use_RP=True, M=10000``, no first-session adaptation; ``RanPAC.py``
``setup_RP``, ``replace_fc``, ``optimise_ridge_parameter``), on ViT-B/16 pretrained on
ImageNet-21k (``pretrained_vit_b16_224_in21k`` for CIFAR-100; ``pretrained_vit_b16_224``, fine-tuned
on ImageNet-1k, for CUB: ``timm-vit-b16-in21k-ft-in1k`` here for ``cub200``), inputs not normalised
(``use_input_norm=False``). Our choices: the weights files (as in ``simplecil``), and the
ImageNet-21k weights for miniImageNet (RanPAC has no miniImageNet configuration); ``G`` and ``Q`` in float64 on the run's device (the
official code: float32 on the CPU), and the ``lambda`` search through one eigendecomposition of
the 80% Gram matrix (the same solutions as one solve per value; the MSE is summed over samples and
classes, the official mean has the same minimiser). ``pretrained`` uses the
backbone's own normalisation. ``quick`` (M = 1024) and ``smoke`` (M = 64) use the shared base
model, sized for a CPU: a 10,000 x 10,000 Gram matrix takes 800 MB and its solves minutes there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fscil_bench import Context, MemoryDeclaration, Session
from fscil_bench.integrations.pretrained import FrozenBackboneHparams, FrozenFeatureMethod
from fscil_bench.toolkit.base_models import SMOKE_BASE_SGD


@dataclass(frozen=True)
class RanPACHparams(FrozenBackboneHparams):
    projection_dim: int = 10000  # M
    ridge_exponents: tuple[int, ...] = tuple(range(-8, 9))  # lambda in 10^-8 .. 10^8
    train_fraction: float = 0.8  # of a session's features, to fit while choosing lambda


#: Rows projected at a time: the projected features of a whole base session (N x M) are never held at once.
CHUNK = 4096


def ridge_solutions(gram: torch.Tensor, targets: torch.Tensor, ridges: list[float]) -> list[torch.Tensor]:
    """``(G + lambda I)^-1 Q`` for every ``lambda`` of ``ridges`` (``G`` symmetric PSD)."""
    values, vectors = torch.linalg.eigh(gram)
    rotated = vectors.T @ targets
    return [vectors @ (rotated / (values + ridge).unsqueeze(1)) for ridge in ridges]


_paper_in21k = RanPACHparams(pretrained="timm-vit-b16-in21k", normalize_inputs=False)
_paper_in1k = RanPACHparams(pretrained="timm-vit-b16-in21k-ft-in1k", normalize_inputs=False)


class RanPAC(FrozenFeatureMethod):
    name = "ranpac"
    paper = "McDonnell et al., RanPAC: Random Projections and Pre-trained Models for Continual Learning, NeurIPS 2023"
    presets = {
        "quick": RanPACHparams(projection_dim=1024),
        "smoke": RanPACHparams(projection_dim=64, base=SMOKE_BASE_SGD),
        "paper": {"cub200": _paper_in1k, "default": _paper_in21k},
        "pretrained": RanPACHparams(pretrained="timm-vit-b16-in21k"),
    }

    def setup(self, ctx: Context) -> None:
        hp: RanPACHparams = ctx.hparams
        generator = torch.Generator().manual_seed(ctx.stage_seed("ranpac-projection"))
        self.w_rand = torch.randn(self.backbone.out_dim, hp.projection_dim, generator=generator).to(ctx.device)
        m, c = hp.projection_dim, ctx.num_classes_total
        self.gram = torch.zeros(m, m, dtype=torch.float64, device=ctx.device)
        self.cross = torch.zeros(m, c, dtype=torch.float64, device=ctx.device)
        self.weights = torch.empty(0, m, device=ctx.device)
        self.ridges: list[float] = []

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(features.float() @ self.w_rand)

    def sums(self, features: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, classes: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``H^T H`` and ``H^T Y`` (float64) of the samples ``rows``, projected a chunk at a time."""
        m = self.w_rand.shape[1]
        gram = torch.zeros(m, m, dtype=torch.float64, device=features.device)
        cross = torch.zeros(m, classes, dtype=torch.float64, device=features.device)
        for chunk in rows.split(CHUNK):
            h = self.project(features[chunk]).double()
            gram += h.T @ h
            cross += h.T @ F.one_hot(labels[chunk].long(), classes).double()
        return gram, cross

    def choose_ridge(self, features: torch.Tensor, labels: torch.Tensor, session: Session, ctx: Context) -> float:
        """The ridge with the least mean squared error on a random 20% of this session's samples,
        fitted on the other 80%."""
        hp: RanPACHparams = ctx.hparams
        ridges = [10.0**e for e in hp.ridge_exponents]
        generator = torch.Generator().manual_seed(ctx.stage_seed("ranpac-ridge-split", session.index))
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        cut = int(len(order) * hp.train_fraction)
        classes = ctx.num_classes_total
        solutions = ridge_solutions(*self.sums(features, labels, order[:cut], classes), ridges)
        errors = [0.0] * len(ridges)
        for chunk in order[cut:].split(CHUNK):
            h = self.project(features[chunk]).double()
            y = F.one_hot(labels[chunk].long(), classes).double()
            for i, w in enumerate(solutions):
                errors[i] += float(((h @ w - y) ** 2).sum())
        return ridges[min(range(len(ridges)), key=errors.__getitem__)]

    def learn(self, features: torch.Tensor, labels: torch.Tensor, session: Session, ctx: Context) -> None:
        gram, cross = self.sums(features, labels, torch.arange(len(labels), device=labels.device), ctx.num_classes_total)
        self.gram += gram
        self.cross += cross
        ridge = self.choose_ridge(features, labels, session, ctx)
        self.ridges.append(ridge)
        ctx.extra["ranpac_ridges"] = self.ridges
        eye = torch.eye(len(self.gram), dtype=self.gram.dtype, device=self.gram.device)
        solution = torch.linalg.solve(self.gram + ridge * eye, self.cross)
        self.weights = solution[:, : session.num_seen].T.float()

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weights.T

    def classifier_weights(self) -> torch.Tensor:
        return self.weights

    def memory(self) -> MemoryDeclaration:
        m, c = self.cross.shape
        return MemoryDeclaration(feature_vectors=0, bytes=8 * (m * m + m * c) + 4 * self.w_rand.numel(),
                                 notes="the accumulated Gram matrix G (M x M) and H^T Y (M x classes), plus W_rand")
