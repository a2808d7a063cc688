"""Faster evaluation of a network whose weights keep changing between evaluations.

A method that fine-tunes its backbone in every session (``finetune``, iCaRL, the Avalanche
strategies) is evaluated after each session on up to 10,000 test images with the network in
evaluation mode. There every BatchNorm is a fixed affine map, which can be folded into the
convolution before it: ``BN(conv(x)) = conv'(x)`` with ``W' = W * g / sqrt(v + eps)`` and
``b' = (b - m) * g / sqrt(v + eps) + beta`` per output channel (``m``, ``v``: running mean and
variance; ``g``, ``beta``: the BatchNorm's affine weights). That removes one pass over every
feature map.

:func:`inference_network` returns such a folded copy. The copy's structure is built once per
network (a ``torch.fx`` trace with each foldable BatchNorm removed); when the original's
parameters or buffers change, only the copy's tensors are recomputed in place, which costs a
few small tensor operations instead of a deep copy and a new trace per session. Changes are seen
through the tensors' version counters, which every in-place update (optimiser step,
``load_state_dict``, BatchNorm statistics) increments, so a stale copy is never used. Outputs
equal the original's up to float rounding. A network that torch.fx cannot trace is copied
unfolded (and copied again when it changes).
"""

from __future__ import annotations

import copy
import itertools
import weakref
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _spatial_dims(module: nn.Module) -> int:
    """1, 2 or 3: the dimensionality a convolution or BatchNorm works in."""
    kinds = _CONVS if isinstance(module, _CONVS) else _NORMS
    return next(i + 1 for i, kind in enumerate(kinds) if isinstance(module, kind))


def _state(network: nn.Module) -> tuple:
    """Identity, version and shape of every parameter and buffer: changes whenever the network does."""
    return tuple(
        (name, id(t), t._version, tuple(t.shape))
        for name, t in itertools.chain(network.named_parameters(), network.named_buffers())
    )



def _layout(state: tuple) -> list[tuple[str, tuple[int, ...]]]:
    """The names and shapes of a :func:`_state`: while they stay the same, the folded copy can
    be refreshed in place instead of rebuilt."""
    return [(name, shape) for name, _, _, shape in state]


class FoldedCopy:
    """An evaluation-mode copy of ``network`` with each BatchNorm that directly follows a
    convolution folded into it, and a :meth:`refresh` that recomputes the copy's tensors from
    ``network``'s current ones without rebuilding it.

    A BatchNorm is folded when it is the only user of a convolution's output, the two have
    the same dimensionality, and it tracks running statistics (otherwise it normalises with
    batch statistics even in evaluation and is kept). Raises whatever ``torch.fx`` raises when
    ``network`` cannot be traced.
    """

    def __init__(self, network: nn.Module):
        self.module: nn.Module = fx.symbolic_trace(copy.deepcopy(network).eval())
        self.pairs: list[tuple[str, str]] = []  # (conv name, folded BatchNorm name)
        graph, modules = self.module.graph, dict(self.module.named_modules())
        for node in list(graph.nodes):
            source = node.args[0] if node.args else None
            if not (node.op == "call_module" and isinstance(modules[node.target], _NORMS)
                    and isinstance(source, fx.Node) and source.op == "call_module"
                    and isinstance(modules[source.target], _CONVS) and len(source.users) == 1):
                continue
            conv, norm = modules[source.target], modules[node.target]
            if not norm.track_running_stats or _spatial_dims(conv) != _spatial_dims(norm):
                continue
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device, dtype=conv.weight.dtype))
            node.replace_all_uses_with(source)
            graph.erase_node(node)
            self.pairs.append((source.target, node.target))
        self.module.delete_all_unused_submodules()
        self.module.recompile()
        self.module.requires_grad_(False)
        self.refresh(network)

    @torch.no_grad()
    def refresh(self, network: nn.Module) -> None:
        """Recompute every tensor of the copy from ``network``'s current values."""
        source = dict(itertools.chain(network.named_parameters(), network.named_buffers()))
        folded = {f"{conv}.{p}" for conv, _ in self.pairs for p in ("weight", "bias")}
        for name, tensor in itertools.chain(self.module.named_parameters(), self.module.named_buffers()):
            if name not in folded:
                tensor.copy_(source[name])
        copies = dict(self.module.named_modules())
        for conv, norm in self.pairs:
            weight, bias = fuse_conv_bn_weights(
                source[f"{conv}.weight"], source.get(f"{conv}.bias"),
                source[f"{norm}.running_mean"], source[f"{norm}.running_var"], network.get_submodule(norm).eps,
                source.get(f"{norm}.weight"), source.get(f"{norm}.bias"),
            )
            copies[conv].weight.copy_(weight)
            copies[conv].bias.copy_(bias)


_copies: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module, Callable[[nn.Module], None] | None]] = (
    weakref.WeakKeyDictionary()
)


@torch.no_grad()
def inference_network(network: nn.Module) -> nn.Module:
    """The BatchNorm-folded evaluation copy of ``network``, brought up to date when ``network``
    has changed. The same copy object is returned as long as the network's set of parameters
    and buffers (names and shapes) stays the same."""
    state = _state(network)
    cached = _copies.get(network)
    if cached is not None and cached[0] == state:
        return cached[1]
    same_layout = cached is not None and _layout(cached[0]) == _layout(state)
    if same_layout and cached[2] is not None:
        cached[2](network)
        module, refresh = cached[1], cached[2]
    else:
        try:
            folded = FoldedCopy(network)
            module, refresh = folded.module, folded.refresh
        except Exception:  # untraceable control flow: an unfolded copy, rebuilt on every change
            module, refresh = copy.deepcopy(network).eval(), None
    _copies[network] = (state, module, refresh)
    return module
