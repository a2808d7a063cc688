"""A backbone cut in two at its middle stage, for mixing intermediate feature maps.

FACT's instance mixture (Zhou et al., CVPR 2022; zhoudw-zdw/CVPR22-Fact@825933b
``models/fact/Network.py:75-117``) mixes the feature maps after ``layer2`` of CEC's ResNet-20
(stem, layer1, layer2 | layer3) and of ResNet-18 (stem, max-pool, layer1, layer2 | layer3,
layer4), then runs the mixture through the rest of the network. :func:`split_backbone` gives that
cut for the suite's backbones, with the same rule for the others: after the second of their
stages (``convnet4`` and ``convnet4-small``: after the second max-pool, 8 x 8 maps at 32 px, as
ResNet-20's layer2 gives 16 x 16 and ResNet-18's 11 x 11 at 84 px; ``resnet12``: after its
second block). ``back(front(x))`` equals ``backbone(x)``; both halves use the backbone's own layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fscil_bench.models.backbones import ConvNet, TorchvisionResNet18
from fscil_bench.models.resnet12 import ResNet12
from fscil_bench.models.resnet20 import ResNet20


@dataclass(frozen=True)
class SplitBackbone:
    """``front`` maps images to the intermediate map, ``back`` maps that to pooled features."""

    front: Callable[[torch.Tensor], torch.Tensor]
    back: Callable[[torch.Tensor], torch.Tensor]


def _pooled(layers: nn.Module, pool: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda h: pool(layers(h)).flatten(1)


def split_backbone(backbone: nn.Module) -> SplitBackbone:
    """The backbone cut after its second stage (module docstring)."""
    if isinstance(backbone, ResNet20):
        front = nn.Sequential(backbone.stem, backbone.layer1, backbone.layer2)
        return SplitBackbone(front, _pooled(backbone.layer3, backbone.pool))
    if isinstance(backbone, TorchvisionResNet18):
        net = backbone.net
        front = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
        return SplitBackbone(front, _pooled(nn.Sequential(net.layer3, net.layer4), net.avgpool))
    if isinstance(backbone, ConvNet):
        pools = [i for i, layer in enumerate(backbone.features) if isinstance(layer, nn.MaxPool2d)]
        cut = pools[1] + 1
        return SplitBackbone(backbone.features[:cut], _pooled(backbone.features[cut:], backbone.pool))
    if isinstance(backbone, ResNet12):
        return SplitBackbone(backbone.features[:2], _pooled(backbone.features[2:], backbone.pool))
    raise ValueError(f"no middle cut known for a {type(backbone).__name__} backbone")
