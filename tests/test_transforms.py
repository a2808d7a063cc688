import torch

from fscil_bench.data.transforms import (
    CropFlip,
    Evaluate,
    Normalization,
    random_crop,
    random_flip,
    to_float,
)

NORM = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_to_float_scales_and_normalises():
    x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    out = to_float(x, Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert out.shape == (1, 3, 2, 2)
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float).view(2, 3, 6, 6)
    out = random_crop(x, 6, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_mirrors_about_half_of_a_batch():
    x = torch.arange(200 * 4, dtype=torch.float).view(200, 1, 1, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).all(dim=(1, 2, 3))
    kept = (out == x).all(dim=(1, 2, 3))
    assert bool((flipped | kept).all())
    assert 60 < int(flipped.sum()) < 140


def test_augmentation_is_reproducible_from_the_generator():
    x = torch.randint(0, 255, (8, 32, 32, 3), dtype=torch.uint8)
    aug = CropFlip(NORM)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_evaluate_resizes_and_crops():
    x = torch.randint(0, 255, (2, 100, 120, 3), dtype=torch.uint8)
    out = Evaluate(NORM, resize_to=92, crop=84)(x)
    assert out.shape == (2, 3, 84, 84)


def test_crop_without_flip_never_mirrors():
    x = torch.zeros(64, 8, 8, 3, dtype=torch.uint8)
    x[:, :, :4] = 255  # left half bright
    out = CropFlip(NORM, size=8, padding=0, flip=False)(x, torch.Generator().manual_seed(0))
    assert bool((out[..., :4] > out[..., 4:].max()).all())
