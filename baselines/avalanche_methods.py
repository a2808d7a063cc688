"""Continual-learning baselines from Avalanche, run through the FSCIL protocol.

Four strategies of Avalanche (Lomonaco et al., "Avalanche: an End-to-End Library for Continual
Learning", CVPR Workshops 2021; Carta et al., "Avalanche: A PyTorch Library for Deep Continual
Learning", JMLR 2023), each wrapped by
:class:`fscil_bench.integrations.avalanche_adapter.AvalancheStrategyMethod` (see that module for
how sessions become experiences, how the network is seeded from the shared base model, and how
Avalanche's metrics relate to ours):

* ``avalanche-naive``: ``Naive``, plain fine-tuning on each experience (the lower bound).
* ``avalanche-lwf``: ``LwF``, Li and Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017:
  distillation of the previous network's softened outputs on the old classes.
* ``avalanche-ewc``: ``EWC``, Kirkpatrick et al., "Overcoming catastrophic forgetting in neural
  networks", PNAS 2017: a quadratic penalty weighted by the diagonal Fisher information.
* ``avalanche-replay``: ``Replay``, experience replay from a fixed-size buffer balanced over
  experiences (e.g. Chaudhry et al., "On Tiny Episodic Memories in Continual Learning", 2019).

``quick`` seeds every network from the shared cross-entropy base model (CPU, minutes), hands the
strategy 20 base images per class as its base experience (EWC's Fisher information and Replay's
buffer come from them) and trains each few-shot session for 10 epochs of SGD at lr 0.01 (one
step per epoch: a session has 25 images). ``paper`` puts them on the field's set-up per family
(:mod:`fscil_bench.toolkit.field`: ResNet-20 on CIFAR, ResNet-18 from scratch on mini, the
ImageNet-pretrained ResNet-18 on CUB, CEC's views, the linear base model of ``finetune``'s
``paper`` preset), hands the strategy every base image and trains each session for 100 epochs
at lr 0.01, batch 25: our choice, as are the strategies' own settings below (these are not FSCIL
papers: there is no published FSCIL recipe for them).

What to expect: without exemplars, LwF and EWC are known to fail in class-incremental learning
(the new classes' logits dominate; van de Ven and Tolias, "Three scenarios for continual
learning", 2019), and they do here too, close to ``avalanche-naive`` and ``finetune``. Avalanche's
``Replay`` splits its buffer equally between experiences (``ExperienceBalancedBuffer``): after
session 8 the 60 base classes share a ninth of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fscil_bench.integrations.avalanche_adapter import (
    AvalancheHparams,
    AvalancheStrategyMethod,
)
from fscil_bench.toolkit.base_models import SMOKE_BASE_SGD
from fscil_bench.toolkit.field import field_presets

_SMOKE = dict(base=SMOKE_BASE_SGD, base_samples_per_class=4, epochs=1, batch_size=8)


def _paper(cls: type) -> dict[str, AvalancheHparams]:
    """The ``paper`` preset of a strategy's hyperparameter class, per family."""
    return field_presets(lambda f: cls(backbone=f.backbone, base=f.base, pretrained=f.pretrained,
                                       train_view=f.train_view, test_view=f.test_view,
                                       base_samples_per_class=None, epochs=100, batch_size=25))


@dataclass(frozen=True)
class NaiveHparams(AvalancheHparams):
    pass


@dataclass(frozen=True)
class LwFHparams(AvalancheHparams):
    alpha: float = 1.0  # weight of the distillation term
    temperature: float = 2.0


@dataclass(frozen=True)
class EWCHparams(AvalancheHparams):
    ewc_lambda: float = 1000.0  # weight of the Fisher penalty
    mode: str = "separate"  # one penalty per past experience


@dataclass(frozen=True)
class ReplayHparams(AvalancheHparams):
    mem_size: int = 1000  # images in the replay buffer, shared by all experiences


class AvalancheNaive(AvalancheStrategyMethod):
    name = "avalanche-naive"
    strategy = "Naive"
    paper = "Avalanche Naive strategy (fine-tuning); Lomonaco et al., Avalanche, CVPR Workshops 2021"
    presets = {"quick": NaiveHparams(), "paper": _paper(NaiveHparams), "smoke": NaiveHparams(**_SMOKE)}


class AvalancheLwF(AvalancheStrategyMethod):
    name = "avalanche-lwf"
    strategy = "LwF"
    paper = "Li and Hoiem, Learning without Forgetting, ECCV 2016 (Avalanche LwF strategy)"
    presets = {"quick": LwFHparams(), "paper": _paper(LwFHparams), "smoke": LwFHparams(**_SMOKE)}

    def strategy_kwargs(self, hp: Any) -> dict[str, Any]:
        return {"alpha": hp.alpha, "temperature": hp.temperature}


class AvalancheEWC(AvalancheStrategyMethod):
    name = "avalanche-ewc"
    strategy = "EWC"
    paper = "Kirkpatrick et al., Overcoming catastrophic forgetting in neural networks, PNAS 2017 (Avalanche EWC strategy)"
    presets = {"quick": EWCHparams(), "paper": _paper(EWCHparams), "smoke": EWCHparams(**_SMOKE)}

    def strategy_kwargs(self, hp: Any) -> dict[str, Any]:
        return {"ewc_lambda": hp.ewc_lambda, "mode": hp.mode}


class AvalancheReplay(AvalancheStrategyMethod):
    name = "avalanche-replay"
    strategy = "Replay"
    paper = "Experience replay (Chaudhry et al., On Tiny Episodic Memories in Continual Learning, 2019; Avalanche Replay strategy)"
    presets = {"quick": ReplayHparams(), "paper": _paper(ReplayHparams),
               "smoke": ReplayHparams(**_SMOKE, mem_size=20)}

    def strategy_kwargs(self, hp: Any) -> dict[str, Any]:
        return {"mem_size": hp.mem_size}
