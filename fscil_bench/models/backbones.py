"""Feature extractors. Each maps images ``(B, 3, H, W)`` to features ``(B, out_dim)`` and exposes
``out_dim``; ``build_backbone(name)`` constructs one by name (:data:`BACKBONES`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fscil_bench.models.resnet12 import ResNet12
from fscil_bench.models.resnet20 import ResNet20
from fscil_bench.registry import Registry


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
    adaptation for 32 px images.

    :meth:`freeze_stages` freezes the stem and the first residual stages (as mmcls's
    ``frozen_stages``): their parameters stop learning and their BatchNorms stay in evaluation
    mode even when the network is put in training mode.
    """

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
        self.frozen_stages = 0

    def stages(self) -> list[nn.Module]:
        """The stem (conv1, bn1), then layer1 .. layer4."""
        return [nn.ModuleList([self.net.conv1, self.net.bn1]), self.net.layer1, self.net.layer2, self.net.layer3,
                self.net.layer4]

    def freeze_stages(self, count: int) -> None:
        """Freeze the stem and the first ``count`` residual stages (``count`` in 0..4; 0 freezes the stem only,
        -1 nothing)."""
        if not -1 <= count <= 4:
            raise ValueError(f"frozen_stages must lie in -1..4, not {count}")
        self.frozen_stages = count
        for stage in self.stages()[: count + 1]:
            stage.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> TorchvisionResNet18:
        super().train(mode)
        for stage in self.stages()[: self.frozen_stages + 1] if self.frozen_stages >= 0 else []:
            stage.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BACKBONES: Registry[Callable[[], nn.Module]] = Registry("backbone")
BACKBONES.add("convnet4", lambda: ConvNet((32, 64, 128, 256)))
BACKBONES.add("convnet4-small", lambda: ConvNet((16, 32, 64, 128)))
BACKBONES.add("resnet18", lambda: TorchvisionResNet18(small_inputs=False))
BACKBONES.add("resnet18-small-input", lambda: TorchvisionResNet18(small_inputs=True))
BACKBONES.add("resnet12", lambda: ResNet12((64, 160, 320, 640)))
BACKBONES.add("resnet20", lambda: ResNet20((16, 32, 64)))
# Joint_FSCIL's CIFAR ResNet-20, twice as wide (128-d; shiwonkim/Joint_FSCIL@dc98067 resnet20_cifar.py:45).
BACKBONES.add("resnet20-wide", lambda: ResNet20((32, 64, 128)))


def build_backbone(name: str) -> nn.Module:
    """A freshly initialised backbone (``out_dim`` features) by name."""
    return BACKBONES.get(name)()
