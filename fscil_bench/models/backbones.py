"""Feature extractors. Each maps images ``(B, 3, H, W)`` to features ``(B, out_dim)`` and exposes
``out_dim``; ``build_backbone(name)`` constructs one by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fscil_bench.models.resnet12 import ResNet12


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """A small VGG-style network for CPU-sized runs: per stage two conv-BN-ReLU layers (one in
    the first stage) and a 2x2 max-pool, then global average pooling."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, w in enumerate(widths):
            layers.append(conv_bn_relu(cin, w))
            if i > 0:
                layers.append(conv_bn_relu(w, w))
            layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


class TorchvisionResNet18(nn.Module):
    """torchvision's ResNet-18 without its classification layer (512-d features). With
    ``small_inputs`` the stem is a 3x3 stride-1 convolution without max-pool, the usual
    adaptation for 32 px images."""

    def __init__(self, small_inputs: bool = False):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if small_inputs:
            net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "convnet4": lambda: ConvNet((32, 64, 128, 256)),
    "convnet4-small": lambda: ConvNet((16, 32, 64, 128)),
    "resnet18": lambda: TorchvisionResNet18(small_inputs=False),
    "resnet18-small-input": lambda: TorchvisionResNet18(small_inputs=True),
    "resnet12": lambda: ResNet12((64, 160, 320, 640)),
}


def build_backbone(name: str) -> nn.Module:
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    return BACKBONES[name]()
