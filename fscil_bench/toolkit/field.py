"""The field's standard set-up per dataset family: backbone, pretraining, base recipe and views.

The FSCIL papers after TOPIC (Tao et al., CVPR 2020) and CEC (Zhang et al., CVPR 2021) run their
methods and baselines on the same backbones: CEC's ResNet-20 on CIFAR-100, a torchvision
ResNet-18 trained from scratch on miniImageNet, and the ImageNet-pretrained torchvision
ResNet-18 on CUB-200. CEC publishes the base recipe of its decoupled-cosine baseline
(icoz69/CEC-CVPR2021@3a5d335): SGD with Nesterov momentum 0.9, lr 0.1, weight decay 5e-4, batch
128, 100 epochs, no dropped last batch, the lr times 0.1 at epochs 60 and 70 (CIFAR), 40 and 70
(mini), 30, 40, 60 and 80 (CUB) (``README.md:62,66,70``; ``train.py:19-35``;
``models/base/fscil_trainer.py:31-41``; ``models/base/Network.py:18-26``), and its data views
(:mod:`fscil_bench.data.views`, ``cec-*``). glyphs100 (and any family not listed) takes CIFAR's.

:data:`FIELD` holds them; the ``paper`` presets of the baselines build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fscil_bench.toolkit.training import SGDRecipe

#: The known weights the field's CUB backbone starts from (see ``fscil-bench weights list``).
IMAGENET_RESNET18 = "torchvision-resnet18-imagenet1k-v1"


@dataclass(frozen=True)
class FieldSetup:
    """One family's standard set-up (module docstring)."""

    backbone: str
    base: SGDRecipe
    train_view: str
    test_view: str
    pretrained: str | None = None


def cec_base(*milestones: int) -> SGDRecipe:
    """CEC's base recipe with its milestones (module docstring)."""
    return SGDRecipe(epochs=100, lr=0.1, batch_size=128, momentum=0.9, weight_decay=5e-4, nesterov=True,
                     schedule="step", milestones=tuple(milestones), gamma=0.1, drop_last=False)


_CIFAR = FieldSetup("resnet20", cec_base(60, 70), "cec-cifar-train", "cec-cifar-test")
FIELD: dict[str, FieldSetup] = {
    "cifar100": _CIFAR,
    "mini_imagenet": FieldSetup("resnet18", cec_base(40, 70), "cec-mini-train", "cec-mini-test"),
    "cub200": FieldSetup("resnet18", cec_base(30, 40, 60, 80), "cec-cub-train", "cec-cub-test", IMAGENET_RESNET18),
    "default": _CIFAR,
}


def field_presets(make: Callable[[FieldSetup], Any]) -> dict[str, Any]:
    """``{family: make(setup)}`` for every family of :data:`FIELD` (``"default"`` included)."""
    return {family: make(setup) for family, setup in FIELD.items()}
