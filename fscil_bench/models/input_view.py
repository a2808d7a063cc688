"""A pretrained network's own view of the benchmark's images: its resolution and normalisation.

The data path hands every network the benchmark's test-time (or training) view: float images
normalised with the benchmark's mean and std, at the benchmark's size. A network trained
elsewhere expects its own input: :class:`ViewAdapter` undoes the benchmark's normalisation,
resizes the images on their device so the shorter side is the network's input size (antialiased,
with the network's interpolation), centre-crops a square, clips to [0, 1] (as an 8-bit image
pipeline would) and normalises with the network's mean and std. The affine maps commute with
the resizing (its weights sum to one), so this equals resizing the [0, 1] image first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fscil_bench.data.transforms import Normalization, center_crop


@dataclass(frozen=True)
class InputView:
    """What a network expects: ``size`` x ``size`` images, resized with ``interpolation``
    ("bicubic" or "bilinear"), normalised with ``mean`` and ``std`` (``normalize=False`` feeds
    [0, 1] images, as some published recipes do)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    normalize: bool = True

    def describe(self) -> dict[str, object]:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "normalize": self.normalize}


def _channel(values: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype).view(1, 3, 1, 1).to(like.device, non_blocking=True)


def to_view(x: torch.Tensor, source: Normalization, view: InputView) -> torch.Tensor:
    """Images normalised with ``source`` -> the network's view (see the module docstring)."""
    x = x * _channel(source.std, x) + _channel(source.mean, x)
    h, w = x.shape[-2:]
    if min(h, w) != view.size or h != w:
        scale = view.size / min(h, w)
        new = (max(view.size, round(h * scale)), max(view.size, round(w * scale)))
        if new != (h, w):
            x = F.interpolate(x, size=new, mode=view.interpolation, antialias=True, align_corners=False)
        x = center_crop(x, view.size)
    x = x.clamp(0.0, 1.0)
    if view.normalize:
        x = (x - _channel(view.mean, x)) / _channel(view.std, x)
    return x


class ViewAdapter(nn.Module):
    """``network`` fed its own view of images normalised with ``source``; ``out_dim`` features.

    The wrapped network stays frozen (evaluation mode, no gradients): it is a fixed feature
    extractor.
    """

    def __init__(self, network: nn.Module, out_dim: int, source: Normalization, view: InputView):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.out_dim = out_dim
        self.source = source
        self.view = view

    def train(self, mode: bool = True) -> ViewAdapter:
        super().train(mode)
        self.network.eval()  # frozen: dropout and normalisation statistics never switch to training
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(to_view(images, self.source, self.view))
