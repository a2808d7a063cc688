"""CEC's graph-attention classifier: prototypes adapted to each other and to the query.

Zhang et al., "Few-Shot Incremental Learning with Continually Evolved Classifiers", CVPR 2021
(icoz69/CEC-CVPR2021@3a5d335 ``models/cec/Network.py:14, 25-116``). :class:`SetAttention` is the
paper's one-head self-attention block over a set of ``d``-dim tokens ``Z`` (``d_k = d_v = d``):

* ``q, k, v = Z W_q^T, Z W_k^T, Z W_v^T`` with bias-free ``W`` drawn from N(0, 2 / (d + d));
* ``A = Dropout_0.1(softmax(q k^T / sqrt(d)))`` over the keys, ``o = A v``;
* ``out = LayerNorm(Z + Dropout_0.5(fc(o)))``, ``fc`` a linear layer with bias and
  Xavier-normal weights, the LayerNorm affine.

:class:`PrototypeAttentionHead` scores a query ``x`` against ``C`` prototypes ``P``: the set
``[P; x]`` goes through the block and the logits are ``scale * cos(x', P'_c)``, so every
prototype is adapted anew for every query. Computed literally that costs ``O(N C^2 d + N C d^2)``
for ``N`` queries. Without dropout (evaluation mode, which is also how CEC meta-trains) the same
numbers come in ``O(N C d)`` time and ``O(N C)`` memory: in prototype ``i``'s attention only the
query's key is new, so its output is ``(1 - w_i) o_i + w_i v_x`` with ``o_i`` the query-free output
and ``w_i = sigmoid(s_ix - logsumexp_j s_ij)``; ``fc`` is affine, so
``fc((1 - w) o + w v) = (1 - w) fc(o) + w fc(v)``; and the cosine to the LayerNorm of that sum is
a function of inner products (:func:`_cosine_to_normalised`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

class SetAttention(nn.Module):
    """CEC's one-head self-attention block with residual and LayerNorm (module docstring)."""

    def __init__(self, dim: int, attention_dropout: float = 0.1, output_dropout: float = 0.5):
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        for layer in (self.query, self.key, self.value):
            nn.init.normal_(layer.weight, mean=0.0, std=math.sqrt(2.0 / (dim + dim)))
        self.fc = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.fc.weight)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.output_dropout = nn.Dropout(output_dropout)
        self.norm = nn.LayerNorm(dim)
        self.temperature = math.sqrt(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, n, d)`` sets of tokens -> ``(B, n, d)``."""
        scores = self.query(tokens) @ self.key(tokens).transpose(1, 2) / self.temperature
        attended = self.attention_dropout(torch.softmax(scores, dim=2)) @ self.value(tokens)
        return self.norm(tokens + self.output_dropout(self.fc(attended)))


class PrototypeAttentionHead(nn.Module):
    """Logits ``(N, C)`` of queries ``(N, d)`` against prototypes ``(C, d)`` through
    :class:`SetAttention` (module docstring)."""

    def __init__(self, dim: int, scale: float = 16.0, attention_dropout: float = 0.1, output_dropout: float = 0.5):
        super().__init__()
        self.attention = SetAttention(dim, attention_dropout, output_dropout)
        self.scale = scale

    def forward(self, prototypes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        dropout = self.attention.attention_dropout.p > 0 or self.attention.output_dropout.p > 0
        if self.training and dropout:
            return self.literal(prototypes, queries)
        return self.fast(prototypes, queries)

    def literal(self, prototypes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """The definition: one set ``[P; x]`` per query through the block."""
        n, (c, d) = len(queries), prototypes.shape
        tokens = torch.cat([prototypes.expand(n, c, d), queries[:, None]], dim=1)
        out = self.attention(tokens)
        return self.scale * F.cosine_similarity(out[:, c:], out[:, :c], dim=-1)

    def fast(self, prototypes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """The same numbers as :meth:`literal` without dropout, in ``O(N C d)`` (module docstring)."""
        att = self.attention
        q_p, k_p, v_p = att.query(prototypes), att.key(prototypes), att.value(prototypes)
        scores_pp = q_p @ k_p.T / att.temperature
        logsumexp_pp = torch.logsumexp(scores_pp, dim=1)
        fc_free = att.fc(torch.softmax(scores_pp, dim=1) @ v_p)  # fc of each prototype's output without the query
        q_x, k_x, v_x = att.query(queries), att.key(queries), att.value(queries)
        # The query's own token attends over [P; x].
        scores_x = torch.cat([q_x @ k_p.T, (q_x * k_x).sum(1, keepdim=True)], dim=1) / att.temperature
        a = torch.softmax(scores_x, dim=1)
        c = len(prototypes)
        x_adapted = att.norm(queries + att.fc(a[:, :c] @ v_p + a[:, c:] * v_x))
        # Prototype i seen by query x, before its LayerNorm: z = P_i + fc_free_i + w (fc(v_x) - fc_free_i).
        w = torch.sigmoid((k_x @ q_p.T) / att.temperature - logsumexp_pp)
        return self.scale * _cosine_to_normalised(x_adapted, prototypes + fc_free, att.fc(v_x), fc_free, w, att.norm)


def _centre(v: torch.Tensor) -> torch.Tensor:
    return v - v.mean(dim=-1, keepdim=True)


def _cosine_to_normalised(x: torch.Tensor, base: torch.Tensor, extra: torch.Tensor, free: torch.Tensor,
                          w: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``cos(x_n, LayerNorm(z_nc))`` for ``z_nc = base_c + w_nc (extra_n - free_c)``, computed from
    inner products (``(N, C)`` matrices) without forming the ``(N, C, d)`` block.

    With ``~`` the centring over the feature dimension, ``z~ = A + w D`` (``A = base~``,
    ``D = extra~_n - free~_c``), ``sigma^2 = |z~|^2 / d + eps`` and ``y = gamma z~ / sigma + beta``:
    ``<x, y> = (<x gamma, A> + w <x gamma, D>) / sigma + <x, beta>`` and
    ``|y|^2 = |gamma z~|^2 / sigma^2 + 2 <gamma beta, z~> / sigma + |beta|^2``, each expanded in ``w``.
    """
    d = x.shape[1]
    gamma = norm.weight if norm.weight is not None else x.new_ones(d)
    beta = norm.bias if norm.bias is not None else x.new_zeros(d)
    a, e, f = _centre(base), _centre(extra), _centre(free)

    def quadratic(metric: torch.Tensor) -> torch.Tensor:
        """``sum_k metric_k z~_k^2`` for every (n, c)."""
        am, em, fm = a * metric, e * metric, f * metric
        ad = (e @ am.T) - (f * am).sum(1)  # <D, metric A>
        dd = (e * em).sum(1, keepdim=True) - 2 * (e @ fm.T) + (f * fm).sum(1)  # <D, metric D>
        return (a * am).sum(1) + 2 * w * ad + w * w * dd

    def linear(v: torch.Tensor) -> torch.Tensor:
        """``<v_n, z~_nc>`` for a row ``v`` (1, d) or one per query (N, d)."""
        return v @ a.T + w * ((v * e).sum(1, keepdim=True) - v @ f.T)

    sigma = torch.sqrt(quadratic(torch.ones_like(gamma)) / d + norm.eps)
    dot = linear(x * gamma) / sigma + (x @ beta)[:, None]
    y_norm_sq = quadratic(gamma * gamma) / sigma**2 + 2 * linear((gamma * beta)[None]) / sigma + (beta * beta).sum()
    return dot / (x.norm(dim=1, keepdim=True) * y_norm_sq.clamp(min=0).sqrt()).clamp(min=1e-8)
