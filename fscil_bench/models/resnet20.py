"""ResNet-20, the CIFAR backbone of the FSCIL literature (CEC, FACT, TEEN, S3C, SAVC).

He et al.'s CIFAR ResNet with n = 3 basic blocks per stage, as CEC's code defines it
(icoz69/CEC-CVPR2021 ``models/resnet20_cifar.py``): a 3x3 stem convolution (3 -> 16 channels,
stride 1) with BatchNorm and ReLU, then three stages of three blocks with 16, 32 and 64 channels
(the first block of stages 2 and 3 has stride 2). A block is conv3x3-BN-ReLU-conv3x3-BN, plus a
shortcut (identity, or 1x1 conv with stride + BN where the shape changes), then ReLU. Global
average pooling of the last 64 x 8 x 8 map (32 px input) gives a 64-d feature. Convolutions
are initialised with Kaiming-normal (fan_out, ReLU), BatchNorm with weight 1 and bias 0.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 mapping ``(B, 3, H, W)`` to pooled features ``(B, 64)``."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), blocks_per_stage: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, cout in enumerate(widths):
            blocks = [BasicBlock(cin if b == 0 else cout, cout, stride=2 if i > 0 and b == 0 else 1)
                      for b in range(blocks_per_stage)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling."""
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_map(x)).flatten(1)
