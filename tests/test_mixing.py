"""Batch Mixup / CutMix with mmcls's semantics, and NC-FSCIL's loss rule."""

from __future__ import annotations

import pytest
import torch

from fscil_bench.data.mixing import BatchMix, cutmix_box, grouped_permutation


def test_grouped_permutation_keeps_every_group_to_itself():
    perm = grouped_permutation(20, 8, torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(20))
    assert all(0 <= perm[i] // 8 == i // 8 for i in range(20))
    assert sorted(grouped_permutation(5, None, torch.Generator()).tolist()) == list(range(5))


def test_the_three_kinds_occur_with_their_probabilities():
    mix = BatchMix()
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    g = torch.Generator().manual_seed(0)
    kinds = [mix(x, y, g).kind for _ in range(1000)]
    assert 340 < kinds.count("mixup") < 460 and 340 < kinds.count("cutmix") < 460 and 150 < kinds.count("identity") < 250


def test_mixup_is_a_convex_combination_with_the_partners():
    mix = BatchMix(probs=(1.0, 0.0, 0.0))
    x, y = torch.rand(6, 3, 4, 4), torch.arange(6) * 10
    batch = mix(x, y, torch.Generator().manual_seed(1))
    partner = [int(v) // 10 for v in batch.mixed_labels]
    assert 0 < batch.lam < 1 and torch.equal(batch.labels, y)
    assert torch.allclose(batch.images, batch.lam * x + (1 - batch.lam) * x[partner], atol=1e-6)


def test_cutmix_pastes_one_box_and_corrects_lambda():
    mix = BatchMix(probs=(0.0, 1.0, 0.0))
    x = torch.arange(4, dtype=torch.float).view(4, 1, 1, 1).expand(4, 3, 10, 10).contiguous()
    y = torch.arange(4)
    for seed in range(20):
        batch = mix(x, y, torch.Generator().manual_seed(seed))
        pasted = batch.images != x
        kept = (~pasted).float().mean(dim=(1, 2, 3))
        differs = batch.mixed_labels != y
        # lambda is the kept fraction of every image whose partner is another image
        assert torch.allclose(kept[differs], torch.full_like(kept[differs], batch.lam))
        assert bool((batch.images[differs] == batch.mixed_labels[differs].view(-1, 1, 1, 1).float())
                    .float().mean(dim=(1, 2, 3)).sub(1 - batch.lam).abs().lt(1e-6).all())


def test_cutmix_box_is_clipped_at_the_border():
    # lambda 0.36: a box of 8 x 8 (sqrt(0.64) * 10) whose centre may lie near an edge
    boxes = {cutmix_box(10, 10, 0.36, torch.Generator().manual_seed(s)) for s in range(50)}
    assert all(0 <= t <= b <= 10 and 0 <= left <= r <= 10 for t, b, left, r in boxes)
    assert any(b - t < 8 for t, b, _, _ in boxes) and any(b - t == 8 for t, b, _, _ in boxes)


def test_identity_batches_carry_no_second_label_set():
    batch = BatchMix(probs=(0.0, 0.0, 1.0))(torch.rand(3, 3, 2, 2), torch.arange(3), torch.Generator())
    assert batch.mixed_labels is None and batch.lam is None


def test_the_nc_fscil_rule_adds_the_plain_loss_once_more():
    def loss(out, labels):  # a loss that reveals which labels it got
        return out[0] * 0 + labels.float().sum()

    x, y = torch.rand(4, 3, 4, 4), torch.tensor([1, 2, 3, 4])
    for rule, first in (("standard", lambda lam: lam), ("nc-fscil", lambda lam: 1 + lam)):
        mix = BatchMix(probs=(1.0, 0.0, 0.0), rule=rule)
        batch = mix(x, y, torch.Generator().manual_seed(0))
        value = mix.loss(loss, torch.zeros(4), batch)
        assert float(value) == pytest.approx(first(batch.lam) * 10 + (1 - batch.lam) * 10)
    identity = BatchMix(probs=(0.0, 0.0, 1.0), rule="nc-fscil")
    assert float(identity.loss(loss, torch.zeros(4), identity(x, y, None))) == 10


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="sum"):
        BatchMix(probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown mixing loss rule"):
        BatchMix(rule="other")
