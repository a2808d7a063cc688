"""Ablation of NC-FSCIL: the fixed simplex ETF trained with cross-entropy instead of dot regression.

Yang et al., ICLR 2023 (NC-FSCIL), compare their dot-regression loss with cross-entropy over the
same fixed ETF classifier. Here everything is as in ``etf`` (neck, frozen backbone, cached
features, one kept mean per old class) except the loss, which is cross-entropy on the scaled
cosine logits ``scale * h^T w_k`` of the classes seen so far (the base classes in the base
session), weight 1. Unlike dot regression, it also pushes features away from the other seen
classes' prototypes.

Presets: ``etf``'s, value by value (``paper``: NC-FSCIL's published recipe per family), with the
loss weight 1 and the temperature ``scale`` 16. The official code publishes no configuration for
this ablation: weight and temperature are our choice (16 is the cosine temperature of CEC and
FACT).
"""

from __future__ import annotations

from dataclasses import dataclass

from fscil_bench.baselines.etf import PRESETS

from fscil_bench.toolkit.neck_learner import FixedETFLearner, NeckLearnerHparams
from fscil_bench.toolkit.presets import derive_presets


@dataclass(frozen=True)
class ETFCEHparams(NeckLearnerHparams):
    """NC-FSCIL's hyperparameters plus ``scale``, the temperature (inverse) of the cosine logits."""

    scale: float = 16.0


class ETFCrossEntropy(FixedETFLearner):
    name = "etf-ce"
    kind = "etf-cross-entropy"
    paper = "Yang et al., ICLR 2023 (NC-FSCIL), ablation: fixed ETF with cross-entropy instead of dot regression"
    presets = derive_presets(PRESETS, ETFCEHparams, loss_weight=1.0)

    def head_recipe(self, hp, ctx):
        return {**super().head_recipe(hp, ctx), "scale": hp.scale}

    def logits(self, head, features, num_seen):
        return self.hp.scale * head(features, num_seen)
