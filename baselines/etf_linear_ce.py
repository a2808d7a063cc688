"""Ablation of NC-FSCIL: a learnable linear classifier with cross-entropy instead of the fixed ETF.

Yang et al., ICLR 2023 (NC-FSCIL), compare their fixed ETF classifier with a learnable one.
Here everything is as in ``etf`` (neck, frozen backbone, cached features, one kept mean per old
class) except the classifier: a linear layer ``W (s h) + b`` on the neck's unit-norm output
``h``, trained with cross-entropy (weight 1) together with the network in the base session.
``s`` is the same temperature ``scale`` as in ``etf-ce``: a default-initialised linear layer on
unit-norm inputs starts with logits near zero, and without ``s`` cross-entropy trains it slowly
(3 base epochs on glyphs100-like data left the base accuracy near 20%). Each incremental session
adds rows for the new classes (default initialisation) and trains the classifier and the neck
on the same inputs as ``etf``.

Presets: ``etf``'s, value by value, with loss weight 1 and ``scale`` 16 (our choice: the official
code publishes no configuration for this ablation).
"""

from __future__ import annotations

from fscil_bench.baselines.etf import PRESETS
from fscil_bench.baselines.etf_ce import ETFCEHparams

from fscil_bench.toolkit.heads import LinearClassifier
from fscil_bench.toolkit.neck_learner import NeckLearner
from fscil_bench.toolkit.presets import derive_presets


class ETFLinearCrossEntropy(NeckLearner):
    name = "etf-linear-ce"
    kind = "linear-cross-entropy"
    paper = "Yang et al., ICLR 2023 (NC-FSCIL), ablation: learnable linear classifier with cross-entropy"
    presets = derive_presets(PRESETS, ETFCEHparams, loss_weight=1.0)

    def make_head(self, hp, ctx, num_base):
        return LinearClassifier(hp.feature_dim, num_base)

    def head_recipe(self, hp, ctx):
        return {"classifier": "linear", "scale": hp.scale}

    def logits(self, head, features, num_seen):
        return head(self.hp.scale * features, num_seen)

    def extend_head(self, head, num_seen):
        head.extend(num_seen)

    def head_weights(self, head, num_seen):
        return head.weights(num_seen)
