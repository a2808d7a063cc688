"""A method's initial backbone: fresh, or from pretrained weights with frozen stages.

:func:`backbone_init` resolves and checks the weights a method starts from (and notes them in
the run's record); :meth:`BackboneInit.build` then makes the network, as often as needed (under
whatever seed the caller sets). :attr:`BackboneInit.identity` is what the initialisation adds to
a cache key: nothing for a backbone trained from scratch, so the keys of from-scratch recipes do
not depend on this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from fscil_bench.models import build_backbone
from fscil_bench.models.weights import LocalWeights, load_state_dict, resolve_weights
from fscil_bench.protocol import Context


@dataclass(frozen=True)
class BackboneInit:
    """How a backbone starts: its name, the verified weights it loads (None: from scratch) and
    how many of its stages stay frozen (``-1``: none; ``0``: the stem; ``k``: stem and ``k`` stages)."""

    name: str
    weights: LocalWeights | None = None
    frozen_stages: int = -1

    @property
    def identity(self) -> dict[str, Any]:
        """The initialisation's part of a cache key (empty from scratch)."""
        out: dict[str, Any] = {}
        if self.weights is not None:
            out["pretrained_sha256"] = self.weights.sha256
        if self.frozen_stages >= 0:
            out["frozen_stages"] = self.frozen_stages
        return out

    @property
    def extra_identity(self) -> dict[str, Any]:
        """What else identifies the network built (for initialisations that build it elsewhere,
        e.g. from a library); empty here, so existing cache keys do not change."""
        return {}

    @property
    def feature_key(self) -> str | None:
        """A key shared with other users of the same frozen network's features (None: none known)."""
        return None

    def build(self) -> nn.Module:
        backbone = build_backbone(self.name)
        if self.weights is not None:
            load_state_dict(backbone, self.weights)
        if self.frozen_stages >= 0:
            if not hasattr(backbone, "freeze_stages"):
                raise ValueError(f"backbone {self.name!r} cannot freeze stages")
            backbone.freeze_stages(self.frozen_stages)
        return backbone


def backbone_init(ctx: Context, name: str, pretrained: str | None = None, frozen_stages: int = -1) -> BackboneInit:
    """The initialisation of backbone ``name``: ``pretrained`` (a known weights name or a path, see
    :mod:`fscil_bench.models.weights`) is resolved and checked now, and the run's record notes the
    weights and the data they were trained on."""
    weights = None
    if pretrained is not None:
        weights = resolve_weights(pretrained, ctx.weights_dir or ctx.cache_dir / "weights")
        ctx.extra["pretrained"] = weights.describe()
        ctx.extra["extra_data"] = f"pretrained weights {weights.name}: {weights.trained_on}"
    return BackboneInit(name, weights, frozen_stages)
