"""The projection neck of NC-FSCIL (Yang et al., ICLR 2023): backbone features -> unit-norm
features in the ETF's space.

Definition, for a backbone with ``C`` output channels and an output dimension ``d`` (512 in the
paper):

    x = global_average_pool(backbone feature map)                    # (B, C)
    z = LeakyReLU_0.1(LayerNorm(W1 x + b1))                          # W1: 2C x C
    z = LeakyReLU_0.1(LayerNorm(W2 z + b2))                          # W2: 2C x 2C
    h = normalise(W3 z + S x)                                        # W3: d x 2C, S: d x C, no biases

``normalise`` divides by the L2 norm, so every output row has unit norm. The shortcut ``S x``
keeps a linear path from the backbone features to the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionNeck(nn.Module):
    """MLP neck with a linear shortcut and L2-normalised output (see the module docstring).

    Accepts pooled features ``(B, C)`` or feature maps ``(B, C, H, W)`` (pooled here); returns
    ``(B, out_dim)`` rows of unit norm.
    """

    def __init__(self, in_dim: int, out_dim: int = 512, hidden_mult: int = 2, negative_slope: float = 0.1):
        super().__init__()
        hidden = hidden_mult * in_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.LeakyReLU(negative_slope),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.LeakyReLU(negative_slope),
            nn.Linear(hidden, out_dim, bias=False),
        )
        self.shortcut = nn.Linear(in_dim, out_dim, bias=False)
        self.in_dim, self.out_dim = in_dim, out_dim

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``W3 z + S x`` before the normalisation (NC-FSCIL's feature mixup mixes these)."""
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        return self.mlp(x) + self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(x), dim=1)
