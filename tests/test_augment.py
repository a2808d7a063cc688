"""The batched augmentation operations: exact resampling, torchvision's crop sampler, colour jitter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fscil_bench.data.augment import (
    CenterCrop,
    ColorJitter,
    HorizontalFlip,
    Pipeline,
    RandomCrop,
    RandomGrayscale,
    RandomResizedCrop,
    Resize,
    adjust_hue,
    grey,
    quantize,
    sample_crop_boxes,
)
from fscil_bench.data.resample import crop_resize
from fscil_bench.data.transforms import Normalization

UNIT = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shape", [(32, 32, 32), (40, 36, 24), (64, 64, 20)])
def test_crop_resize_equals_interpolate_of_each_cropped_box(mode, antialias, shape):
    h, w, s = shape
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 3, h, w, generator=g)
    height, width = torch.randint(3, h + 1, (5,), generator=g), torch.randint(3, w + 1, (5,), generator=g)
    top = (torch.rand(5, generator=g) * (h - height + 1)).long()
    left = (torch.rand(5, generator=g) * (w - width + 1)).long()
    out = crop_resize(x, top, left, height, width, (s, s + 3), mode, antialias)
    for b in range(5):
        box = x[b : b + 1, :, top[b] : top[b] + height[b], left[b] : left[b] + width[b]]
        ref = F.interpolate(box, size=(s, s + 3), mode=mode, antialias=antialias, align_corners=False)
        assert torch.allclose(out[b : b + 1], ref, atol=1e-5)


def _torchvision_boxes(uniforms, batch, height, width, scale, ratio, tries=10):
    """The crop boxes torchvision's RandomResizedCrop.get_params gives for the same uniform draws,
    one image at a time with its ten tries (written independently, as a reference)."""
    areas, aspects, corners = uniforms
    out = []
    for b in range(batch):
        for t in range(tries):
            target = height * width * (scale[0] + (scale[1] - scale[0]) * float(areas[b, t]))
            lo, hi = math.log(ratio[0]), math.log(ratio[1])
            aspect = math.exp(lo + (hi - lo) * float(aspects[b, t]))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                i = int(float(corners[b, 0]) * (height - h + 1))
                j = int(float(corners[b, 1]) * (width - w + 1))
                out.append((i, j, h, w))
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
            out.append(((height - h) // 2, (width - w) // 2, h, w))
    return out


@pytest.mark.parametrize("scale,shape", [((0.08, 1.0), (84, 84)), ((0.6, 1.0), (32, 32)), ((0.5, 3.0), (20, 50))])
def test_crop_boxes_follow_torchvisions_ten_tries_and_centre_fallback(scale, shape):
    height, width = shape
    ratio = (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(200, height, width, scale, ratio, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same draws, in the documented order
    draws = (torch.rand((200, 10), generator=g, dtype=torch.float64), torch.rand((200, 10), generator=g, dtype=torch.float64),
             torch.rand((200, 2), generator=g, dtype=torch.float64))
    expected = _torchvision_boxes(draws, 200, height, width, scale, ratio)
    got = list(zip(*(v.tolist() for v in boxes)))
    assert got == expected
    if scale[1] > 1:  # scale up to 3x the image: some images exhaust their tries and fall back
        assert ((height - 20) // 2, (width - round(20 * 4 / 3)) // 2, 20, round(20 * 4 / 3)) in got


def test_random_resized_crop_of_the_whole_image_is_the_image():
    x = torch.rand(4, 3, 16, 16)
    out = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), interpolation="bicubic", antialias=False)(x, None)
    assert torch.allclose(out, x, atol=1e-6)


def test_random_crop_pads_with_black_and_windows_the_padded_image():
    x = torch.rand(64, 3, 6, 6)
    out = RandomCrop(6, padding=2)(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(64):
        assert any(torch.equal(out[i], padded[i, :, r : r + 6, c : c + 6]) for r in range(5) for c in range(5))
    assert bool((out == 0).any())


def test_flip_and_grayscale_pick_about_p_of_the_batch():
    x = torch.rand(400, 3, 2, 4)
    flipped = HorizontalFlip(0.5)(x, torch.Generator().manual_seed(0))
    n = int((flipped == x.flip(-1)).all(dim=(1, 2, 3)).sum())
    assert 160 < n < 240
    gray = RandomGrayscale(0.25)(x, torch.Generator().manual_seed(0))
    is_grey = (gray[:, 0] == gray[:, 1]).all(dim=(1, 2)) & (gray[:, 1] == gray[:, 2]).all(dim=(1, 2))
    assert 60 < int(is_grey.sum()) < 140
    assert torch.allclose(gray[is_grey][:, :1], grey(x[is_grey]))


def test_resize_and_centre_crop_as_torchvision():
    x = torch.rand(2, 3, 32, 48)
    assert Resize(36, "bicubic", antialias=False)(x).shape == (2, 3, 36, 54)
    assert Resize(92, square=True)(x).shape == (2, 3, 92, 92)
    assert torch.equal(CenterCrop(32)(torch.arange(36 * 36.0).view(1, 1, 36, 36))[0, 0, 0, 0], torch.tensor(2 * 36 + 2.0))


def test_color_jitter_factors_orders_and_adjustments():
    jitter = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
    order, values = jitter.factors(4000, torch.Generator().manual_seed(0))
    assert sorted(order[0].tolist()) == [0, 1, 2, 3]
    assert len({tuple(o) for o in order.tolist()}) == 24  # every order occurs
    assert float(values[:, :3].min()) >= 0.6 and float(values[:, :3].max()) <= 1.4
    assert abs(float(values[:, :3].mean()) - 1.0) < 0.02 and bool((values[:, 3] == 0).all())
    # brightness alone: the image times its factor, clipped
    x = torch.rand(8, 3, 5, 5)
    b = ColorJitter(brightness=0.4)
    out = b(x, torch.Generator().manual_seed(3))
    _, vals = b.factors(8, torch.Generator().manual_seed(3))
    assert torch.allclose(out, (x * vals[:, 0].float().view(-1, 1, 1, 1)).clamp(0, 1), atol=1e-6)
    # saturation 0 (factor in [0, 2] with v = 1, here forced through a grey image): grey images stay grey
    g = grey(x).expand_as(x).contiguous()
    assert torch.allclose(ColorJitter(saturation=1.0, contrast=1.0)(g, torch.Generator().manual_seed(1)).std(dim=1), torch.zeros(8, 5, 5), atol=1e-6)


def test_color_jitter_applies_each_image_its_own_order():
    # contrast then brightness differs from brightness then contrast once values are clipped
    x = torch.rand(64, 3, 4, 4)
    jitter = ColorJitter(brightness=0.9, contrast=0.9)
    out = jitter(x, torch.Generator().manual_seed(5))
    order, vals = jitter.factors(64, torch.Generator().manual_seed(5))
    for i in range(64):
        y = x[i : i + 1]
        for op in order[i].tolist():
            f = float(vals[i, op])
            if op == 0:
                y = (f * y).clamp(0, 1)
            elif op == 1:
                y = (f * y + (1 - f) * grey(y).mean()).clamp(0, 1)
        assert torch.allclose(out[i : i + 1], y, atol=1e-5)


def test_hue_shift_of_a_full_turn_is_the_identity_and_a_third_rotates_channels():
    x = torch.rand(3, 3, 4, 4)
    assert torch.allclose(adjust_hue(x, torch.ones(3)), x, atol=1e-5)
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    assert torch.allclose(adjust_hue(red, torch.tensor([1 / 3])), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1), atol=1e-5)


def test_pipeline_rounds_to_8_bit_levels_and_draws_only_from_the_generator():
    images = torch.randint(0, 256, (6, 20, 20, 3), dtype=torch.uint8)
    pipe = Pipeline(UNIT, (RandomResizedCrop(16, interpolation="bicubic", antialias=False), HorizontalFlip(),
                           ColorJitter(0.4, 0.4, 0.4, 0.1, uint8_levels=True)), uint8_steps=True)
    torch.manual_seed(0)
    a = pipe(images, torch.Generator().manual_seed(9))
    torch.manual_seed(1)  # the global state plays no part
    b = pipe(images, torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and a.shape == (6, 3, 16, 16)
    assert torch.equal(quantize(a), a)
    assert not torch.equal(a, pipe(images, torch.Generator().manual_seed(10)))
    assert "RandomResizedCrop(size=16" in repr(pipe)  # the repr names every value (cache keys)
