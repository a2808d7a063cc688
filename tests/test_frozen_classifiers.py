"""The frozen-feature classifiers' mathematics (FeCAM, RanPAC), the input view of a pretrained
network, and test-image features kept on disk between runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fscil_bench.baselines.fecam import shrink, squared_mahalanobis, unit_diagonal
from fscil_bench.baselines.ranpac import RanPAC, ridge_solutions
from fscil_bench.data.transforms import Evaluate, Normalization
from fscil_bench.models.input_view import InputView, ViewAdapter, to_view
from fscil_bench.toolkit.feature_store import FeatureStore
from fscil_bench.toolkit.features import FrozenFeatureMemo

# --- FeCAM ---------------------------------------------------------------------------------------


def test_fecam_shrinkage_and_normalisation_follow_the_published_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5))
    cov = np.cov(x.T)
    cov[0, 1] = cov[1, 0] = 0.0  # a zero off-diagonal entry: left out of the off-diagonal mean
    off = cov[~np.eye(5, dtype=bool)]
    off_mean = off[off != 0].mean()
    expected = cov + 2.0 * np.diag(cov).mean() * np.eye(5) + 0.5 * off_mean * (1 - np.eye(5))
    got = shrink(torch.from_numpy(cov), 2.0, 0.5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    corr = unit_diagonal(got).numpy()
    sd = np.sqrt(np.diag(expected))
    np.testing.assert_allclose(corr, expected / np.outer(sd, sd), rtol=1e-12)
    np.testing.assert_allclose(np.diag(corr), 1.0)


def test_fecam_distance_is_the_squared_mahalanobis_distance_per_class():
    torch.manual_seed(0)
    x, means = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    a = torch.randn(2, 3, 3, dtype=torch.float64)
    precisions = a @ a.transpose(1, 2)
    got = squared_mahalanobis(x, means, precisions)
    for i in range(4):
        for c in range(2):
            d = x[i] - means[c]
            assert got[i, c].item() == pytest.approx((d @ precisions[c] @ d).item(), rel=1e-12)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    torch.testing.assert_close(squared_mahalanobis(x, means, eye), torch.cdist(x, means) ** 2)


# --- RanPAC --------------------------------------------------------------------------------------


def test_ranpac_ridge_solutions_solve_the_regularised_normal_equations():
    torch.manual_seed(0)
    h, y = torch.randn(30, 6, dtype=torch.float64).relu(), F.one_hot(torch.arange(30) % 4, 4).double()
    gram, cross = h.T @ h, h.T @ y
    ridges = [1e-8, 1e-2, 1.0, 1e3]
    for ridge, w in zip(ridges, ridge_solutions(gram, cross, ridges)):
        torch.testing.assert_close(w, torch.linalg.solve(gram + ridge * torch.eye(6, dtype=torch.float64), cross))


class _Ctx:
    """What RanPAC's ``learn`` uses of a run's context."""

    def __init__(self, hp, classes: int):
        self.hparams, self.num_classes_total, self.extra, self.device = hp, classes, {}, torch.device("cpu")

    def stage_seed(self, *tags):
        return 7


class _Session:
    def __init__(self, index: int, num_seen: int):
        self.index, self.num_seen, self.is_base = index, num_seen, index == 0


def test_ranpac_accumulates_the_gram_matrix_and_picks_the_ridge_of_least_held_out_error():
    import dataclasses

    hp = dataclasses.replace(RanPAC.presets["smoke"], projection_dim=16)
    ctx = _Ctx(hp, classes=6)
    method = RanPAC()
    method.backbone = type("B", (), {"out_dim": 5})()
    method.setup(ctx)
    torch.manual_seed(1)
    sessions = [(torch.randn(40, 5), torch.arange(40) % 4), (torch.randn(10, 5), 4 + torch.arange(10) % 2)]
    for t, (f, y) in enumerate(sessions):
        method.learn(f, y, _Session(t, 4 if t == 0 else 6), ctx)
    f_all = torch.cat([f for f, _ in sessions])
    y_all = torch.cat([y for _, y in sessions])
    h = F.relu(f_all @ method.w_rand).double()
    torch.testing.assert_close(method.gram, h.T @ h)  # the sum over sessions = the Gram matrix of all samples
    torch.testing.assert_close(method.cross, h.T @ F.one_hot(y_all, 6).double())
    ridge = method.ridges[-1]
    expected = torch.linalg.solve(method.gram + ridge * torch.eye(16, dtype=torch.float64), method.cross)[:, :6].T
    torch.testing.assert_close(method.weights, expected.float())
    assert method.classify(method.project(f_all)).shape == (50, 6)
    # The choice: the candidate with the least squared error on the held-out 20% of the last session.
    f, y = sessions[1]
    generator = torch.Generator().manual_seed(7)
    order = torch.randperm(10, generator=generator)
    fit, held = order[:8], order[8:]
    hs, ys = F.relu(f @ method.w_rand).double(), F.one_hot(y, 6).double()
    errors = {}
    for e in hp.ridge_exponents:
        w = torch.linalg.solve(hs[fit].T @ hs[fit] + 10.0**e * torch.eye(16, dtype=torch.float64), hs[fit].T @ ys[fit])
        errors[10.0**e] = float(((hs[held] @ w - ys[held]) ** 2).sum())
    best = min(errors.values())
    assert errors[ridge] <= best * (1 + 1e-6) + 1e-12


# --- the input view ------------------------------------------------------------------------------


def test_the_view_undoes_the_benchmarks_normalisation_resizes_and_applies_the_networks():
    torch.manual_seed(0)
    raw = torch.randint(0, 256, (2, 16, 24, 3), dtype=torch.uint8)
    source = Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    view = InputView(size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear")
    x01 = raw.permute(0, 3, 1, 2).float() / 255
    small = F.interpolate(x01, size=(8, 12), mode="bilinear", antialias=True, align_corners=False)[..., 2:10]
    expected = (small.clamp(0, 1) - 0.5) / 0.25
    torch.testing.assert_close(to_view(Evaluate(source)(raw), source, view), expected, rtol=1e-5, atol=1e-5)
    unnormalised = to_view(Evaluate(source)(raw), source, InputView(8, (0.5,) * 3, (0.25,) * 3, "bilinear", normalize=False))
    torch.testing.assert_close(unnormalised, small.clamp(0, 1), rtol=1e-5, atol=1e-5)
    same_size = to_view(Evaluate(source)(raw[:, :, :16]), source, InputView(16, (0.0,) * 3, (1.0,) * 3))
    torch.testing.assert_close(same_size, x01[..., :16], rtol=1e-5, atol=1e-5)  # no resampling at its own size
    adapter = ViewAdapter(torch.nn.Flatten(), 8 * 8 * 3, source, view)
    adapter.train()
    assert not adapter.network.training and adapter(Evaluate(source)(raw)).shape == (2, 192)


# --- test-image features on disk -----------------------------------------------------------------


class CountingNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return x.flatten(1)[:, :4] * 2


def test_a_memo_with_a_store_embeds_each_image_once_across_runs_and_ignores_damaged_chunks(tmp_path):
    torch.manual_seed(0)
    images = torch.randn(10, 3, 4, 4)
    first = CountingNet()
    memo = FrozenFeatureMemo(first, FeatureStore(tmp_path / "memo"))
    out = torch.cat([memo(images[:6]), memo(images[4:])])
    assert first.seen == 10
    chunks = sorted((tmp_path / "memo").glob("chunk-*.npz"))
    assert len(chunks) == 2
    second = CountingNet()
    again = FrozenFeatureMemo(second, FeatureStore(tmp_path / "memo"))
    torch.testing.assert_close(torch.cat([again(images[:6]), again(images[4:])]), out)
    assert second.seen == 0  # every feature came from the disk
    with np.load(chunks[0]) as chunk:
        lost = len(chunk["keys"])
    chunks[0].write_bytes(chunks[0].read_bytes()[:-7])  # a damaged chunk fails its checksum
    third = CountingNet()
    torch.testing.assert_close(FrozenFeatureMemo(third, FeatureStore(tmp_path / "memo"))(images), images.flatten(1)[:, :4] * 2)
    assert third.seen == lost  # its samples are computed again
