"""A fixed simplex equiangular tight frame (ETF): one classifier prototype per class, never learned.

Definition. For ``K`` classes in ``d`` dimensions the simplex ETF is the ``d x K`` matrix

    M = sqrt(K / (K - 1)) * U (I_K - 1_K 1_K^T / K),

where ``U`` is a ``d x K`` matrix of orthonormal columns (``U^T U = I_K``). Its Gram matrix is
``M^T M = K/(K-1) (I_K - 1 1^T / K)``: every column ``m_k`` has unit norm and every pair of
columns has cosine ``-1/(K-1)``, the largest equal separation ``K`` directions can have. This is
the geometry classifier prototypes and class means converge to at the end of training (neural
collapse, Papyan et al., PNAS 2020); Yang et al., "Neural Collapse Inspired Feature-Classifier
Alignment for Few-Shot Class Incremental Learning" (NC-FSCIL), ICLR 2023, fix it in advance for
every class of the benchmark, base and future, and train features toward it.

``U`` is random: the Q factor of a random ``d x K`` matrix drawn from a seeded generator, so the
same seed gives the same ETF. The matrix is Gaussian by default (``basis="gaussian"``, which makes
``U`` uniformly distributed over the orthonormal frames); NC-FSCIL draws it with entries uniform on
[0, 1) (``basis="uniform"``; NeuralCollapseApplications/FSCIL@37a5475 ``mmfscil/models/ETFHead.py:17-24``).
The Gram matrix, and so every angle between prototypes, is the same either way. The columns span a ``K - 1``-dimensional subspace, so an ETF exists
only for ``K <= d + 1``. For ``K = d + 1`` no ``d x K`` matrix has orthonormal columns; then
``U = Q B^T`` with ``B`` an orthonormal ``K x (K-1)`` basis of the vectors orthogonal to ``1_K`` and
``Q`` a random ``d x (K-1)`` matrix of orthonormal columns, which gives the same Gram matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn


BASES = ("gaussian", "uniform")


def _orthonormal_columns(rows: int, cols: int, generator: torch.Generator, basis: str = "gaussian") -> torch.Tensor:
    """A random ``rows x cols`` float64 matrix with orthonormal columns (``cols <= rows``): the Q
    factor of a Gaussian or a uniform [0, 1) matrix."""
    if basis not in BASES:
        raise ValueError(f"unknown ETF basis {basis!r}; choose from {', '.join(BASES)}")
    draw = torch.randn if basis == "gaussian" else torch.rand
    q, r = torch.linalg.qr(draw(rows, cols, generator=generator, dtype=torch.float64))
    # Fix the column signs (diag(R) > 0) so the result depends only on the Gaussian draw.
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(torch.float64)


def simplex_etf(num_classes: int, dim: int = 512, seed: int = 0, basis: str = "gaussian") -> torch.Tensor:
    """The ``dim x num_classes`` simplex ETF ``M`` (float32): column ``k`` is class ``k``'s prototype
    (``basis``: the distribution ``U`` is drawn from, see the module docstring).

    Raises ``ValueError`` when ``num_classes < 2`` or ``num_classes > dim + 1`` (no simplex ETF of
    that many classes fits in ``dim`` dimensions).
    """
    k, d = int(num_classes), int(dim)
    if k < 2:
        raise ValueError(f"a simplex ETF needs at least 2 classes, got {k}")
    if k > d + 1:
        raise ValueError(
            f"a simplex ETF of {k} classes needs at least {k - 1} dimensions, but the feature dimension is {d}: "
            f"raise the feature (neck output) dimension to >= {k - 1} or use fewer classes"
        )
    generator = torch.Generator().manual_seed(int(seed))
    centering = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    if k <= d:
        u = _orthonormal_columns(d, k, generator, basis)
    else:  # k == d + 1
        complement, _ = torch.linalg.qr(centering[:, : k - 1])  # K x (K-1), orthogonal to 1_K
        u = _orthonormal_columns(d, k - 1, generator, basis) @ complement.T
    m = math.sqrt(k / (k - 1)) * u @ centering
    return m.to(torch.float32)


class FixedETFClassifier(nn.Module):
    """A classifier whose prototypes are the columns of a fixed simplex ETF (a buffer, no parameter).

    ``forward(h, num_seen)`` returns ``h @ M[:, :num_seen]``: for unit-norm features ``h`` these
    are the cosine similarities to the prototypes of the first ``num_seen`` classes.
    """

    def __init__(self, num_classes: int, dim: int = 512, seed: int = 0, basis: str = "gaussian"):
        super().__init__()
        self.register_buffer("prototypes", simplex_etf(num_classes, dim, seed, basis))

    @property
    def num_classes(self) -> int:
        return self.prototypes.shape[1]

    def forward(self, features: torch.Tensor, num_seen: int | None = None) -> torch.Tensor:
        protos = self.prototypes if num_seen is None else self.prototypes[:, :num_seen]
        return features @ protos
