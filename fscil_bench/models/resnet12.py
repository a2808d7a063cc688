"""ResNet-12, the usual few-shot backbone (as used by NC-FSCIL for CIFAR-100 and miniImageNet).

Four residual blocks with ``channels`` outputs (64-160-320-640 by default). Each block is

    y = LeakyReLU_0.1(BN(conv3x3(x)))
    y = LeakyReLU_0.1(BN(conv3x3(y)))
    y = BN(conv3x3(y))
    out = MaxPool2x2(LeakyReLU_0.1(y + BN(conv1x1(x))))

i.e. three 3x3 conv-BN-LeakyReLU layers (the last activation applied after the 1x1 conv-BN
shortcut is added) and a 2x2 max-pool. Global average pooling of the last map gives the
``channels[-1]``-dimensional feature (640). A 32 px input ends as a 2x2 map, an 84 px input
as 5x5. Convolutions start from Kaiming-normal weights (fan-out, gain sqrt(2)), BatchNorms at
weight 1 and bias 0, as NC-FSCIL initialises them.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout))


class ResNet12Block(nn.Module):
    def __init__(self, cin: int, cout: int, negative_slope: float = 0.1):
        super().__init__()
        act = nn.LeakyReLU(negative_slope)
        self.body = nn.Sequential(_conv_bn(cin, cout, 3), act, _conv_bn(cout, cout, 3), act, _conv_bn(cout, cout, 3))
        self.shortcut = _conv_bn(cin, cout, 1)
        self.act = nn.LeakyReLU(negative_slope)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.body(x) + self.shortcut(x)))


class ResNet12(nn.Module):
    """ResNet-12 mapping ``(B, 3, H, W)`` to pooled features ``(B, channels[-1])``."""

    def __init__(self, channels: tuple[int, int, int, int] = (64, 160, 320, 640), negative_slope: float = 0.1):
        super().__init__()
        blocks, cin = [], 3
        for cout in channels:
            blocks.append(ResNet12Block(cin, cout, negative_slope))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = channels[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # NC-FSCIL's init (mmfewshot resnet12.py:171-178): a = 0, i.e. gain sqrt(2)
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)
