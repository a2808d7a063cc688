"""The feature caches: on-disk base-pool features and the in-memory memo of a frozen network."""

from __future__ import annotations

import torch
from torch import nn

from fscil_bench.toolkit.features import FrozenFeatureMemo


class CountingNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 4)
        self.samples_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples_seen += len(x)
        return self.linear(x.flatten(1))


def test_memo_returns_the_networks_features_and_computes_each_distinct_image_once():
    torch.manual_seed(0)
    network = CountingNetwork()
    memo = FrozenFeatureMemo(network)
    images = torch.randn(10, 3, 2, 2)
    with torch.no_grad():
        expected = network.linear(images.flatten(1))
    network.samples_seen = 0

    assert torch.allclose(memo(images[:6]), expected[:6])
    assert network.samples_seen == 6
    # A later, larger evaluation: the six known images come from the memo, in the caller's order.
    order = torch.tensor([9, 0, 7, 5, 1, 8, 2, 6, 3, 4])
    assert torch.allclose(memo(images[order]), expected[order])
    assert network.samples_seen == 10
    assert len(memo) == 10
    # The same images in channels-last memory (as the batch transforms produce) are the same keys.
    assert torch.allclose(memo(images.contiguous(memory_format=torch.channels_last)), expected)
    assert network.samples_seen == 10


def test_memo_tells_apart_inputs_that_differ_in_one_value_and_forgets_on_clear():
    network = CountingNetwork()
    memo = FrozenFeatureMemo(network)
    images = torch.zeros(2, 3, 2, 2)
    memo(images)
    changed = images.clone()
    changed[1, 2, 1, 1] = 1e-6
    out = memo(changed)
    assert network.samples_seen == 3  # only the changed image was computed again
    with torch.no_grad():
        assert torch.allclose(out, network.linear(changed.flatten(1)))
    memo.clear()
    memo(images)
    assert network.samples_seen == 5


def test_memo_keys_cover_shape_and_dtype_not_only_the_bytes():
    network = CountingNetwork()
    memo = FrozenFeatureMemo(lambda x: network(x.reshape(len(x), 3, 2, 2).float()))
    images = torch.randn(2, 3, 2, 2)
    memo(images)
    memo(images.reshape(2, 3, 4, 1))  # same bytes in the same order, another shape
    memo(images.view(torch.int32))  # same bytes, another dtype
    assert network.samples_seen == 6
    memo(images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))  # only the layout differs
    assert network.samples_seen == 6
