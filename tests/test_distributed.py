"""Data-parallel training: 2 gloo processes on the CPU against 1 process, same global batch.

Tolerance and why: the two runs add up the same per-sample gradients in a different order
(each rank sums its half of the batch, then DDP adds the two halves), and floating-point
addition is not associative, so the weights agree to rounding error, not bit for bit. The
float64 case is held to ``atol=1e-10``; the float32 case to ``atol=1e-5`` (float32 rounding,
about 1e-7 per step, grows a little through momentum over the steps). A wrong split or loss
scale (e.g. a batch seen twice, or a gradient off by the 4/3 : 2/3 factor of the uneven
7 = 4 + 3 split used here) moves the weights by the size of an SGD step, about 1e-2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from fscil_bench import distributed
from fscil_bench.cli import main
from fscil_bench.data.arrays import ImageArray, LabelledImages
from fscil_bench.data.transforms import CropFlip, Evaluate, Normalization
from fscil_bench.protocol import BenchmarkInfo, Context, Session
from fscil_bench.toolkit.base_models import cross_entropy_base_model
from fscil_bench.toolkit.training import SGDRecipe, train_supervised

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
# 30 samples in global batches of 7 (the last 2 dropped): 4 steps per epoch, split 4 + 3 over 2 ranks.
RECIPE = SGDRecipe(epochs=2, lr=0.1, batch_size=7, momentum=0.9, weight_decay=5e-4, warmup_epochs=0.5)


def tiny_data(n: int = 30, classes: int = 3) -> LabelledImages:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    images = rng.integers(0, 255, size=(n, 16, 16, 3)).astype(np.uint8)
    return LabelledImages(ImageArray(images, labels), CropFlip(NORM, size=16, padding=2), Evaluate(NORM))


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # no BatchNorm, no dropout: the result depends only on the batches
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def tiny_ctx(cache_dir: Path, seed: int = 0) -> Context:
    info = BenchmarkInfo(name="tiny", version=1, family="tiny", num_classes=3, num_sessions=1, num_base_classes=3, image_size=16)
    return Context.create(info, None, seed, cache_dir=cache_dir, log=lambda msg: None)


def train_both(cache_dir: Path) -> dict[str, object]:
    """The float32 (default forward) and float64 (custom forward) trainings, and a cached base model."""
    torch.set_num_threads(1)
    out: dict[str, object] = {}
    model = tiny_model()
    out["history32"] = train_supervised(model, tiny_data(), F.cross_entropy, RECIPE, tiny_ctx(cache_dir), desc="f32")
    out["weights32"] = {k: v.clone() for k, v in model.state_dict().items()}
    model = tiny_model().double()
    out["history64"] = train_supervised(model, tiny_data(), F.cross_entropy, RECIPE, tiny_ctx(cache_dir), desc="f64",
                                        forward=lambda x: model(x.double()))
    out["weights64"] = {k: v.clone() for k, v in model.state_dict().items()}
    session = Session(index=0, new_classes=(0, 1, 2), num_seen=3, shots=None, train=tiny_data())
    ctx = tiny_ctx(cache_dir)
    base = cross_entropy_base_model(session, ctx, "convnet4-small", SGDRecipe(epochs=1, lr=0.05, batch_size=8))
    out["base"] = {k: v.clone() for k, v in base.state_dict().items()}
    out["base_note"] = ctx.extra["base_model"]
    return out


def _worker(rank: int, world: int, folder: str) -> None:
    # Rendezvous through a file, not a TCP port: no port to pick, so no race for one.
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        torch.save(train_both(Path(folder) / "cache"), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[dict, dict, Path]:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(folder)), nprocs=2, join=True)
    return torch.load(folder / "rank0.pt"), torch.load(folder / "rank1.pt"), folder


def test_two_processes_match_one_process_with_the_same_global_batch(two_ranks, tmp_path):
    rank0, rank1, _ = two_ranks
    single = train_both(tmp_path)  # this process has no process group: plain single-process training
    for name in single["weights64"]:
        torch.testing.assert_close(rank0["weights64"][name], single["weights64"][name], rtol=0, atol=1e-10)
    for name in single["weights32"]:
        torch.testing.assert_close(rank0["weights32"][name], single["weights32"][name], rtol=0, atol=1e-5)
    # The reported loss is the mean over the whole global batch, as in one process.
    # (summed in float32 on the device, hence 1e-6 for both).
    np.testing.assert_allclose(rank0["history64"], single["history64"], rtol=1e-6)
    np.testing.assert_allclose(rank0["history32"], single["history32"], rtol=1e-6)
    # Training moved the weights far more than the tolerance (so the comparison means something).
    start = tiny_model().state_dict()
    assert max((single["weights32"][k] - start[k]).abs().max().item() for k in start) > 1e-2


def test_every_rank_ends_with_the_same_model(two_ranks):
    rank0, rank1, _ = two_ranks
    for key in ("weights32", "weights64", "base"):
        for name, value in rank0[key].items():
            assert torch.equal(value, rank1[key][name]), (key, name)


def test_the_base_model_cache_is_written_once_by_rank_0(two_ranks):
    rank0, rank1, folder = two_ranks
    assert rank0["base_note"]["cache_hit"] is False and rank1["base_note"]["cache_hit"] is False
    files = sorted(p.name for p in (folder / "cache" / "base_models").iterdir())
    key = rank0["base_note"]["key"]
    assert files == [f"{key}.lock", f"{key}.pt", f"{key}.pt.sha256"]  # the lock: rank 0's, while it trained


def test_batch_slices_partition_the_global_batch():
    for n in (1, 7, 8, 128, 129):
        for world in (1, 2, 3, 8):
            rows = [i for r in range(world) for i in range(n)[distributed.batch_slice(n, r, world)]]
            assert rows == list(range(n))
            scales = [distributed.loss_scale(len(range(n)[distributed.batch_slice(n, r, world)]), n, world) for r in range(world)]
            assert sum(scales) == pytest.approx(world)  # sum_r n_r W / N = W: the average weight is 1


def test_without_a_process_group_everything_is_single_process():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.local_part(5) == (slice(0, 5), 1.0)


def test_sync_batchnorm_on_the_cpu_is_refused(tmp_path, capsys):
    code = main(["run", "-b", "glyphs100-tiny", "-m", "prototype", "--device", "cpu", "--sync-batchnorm", "-o", str(tmp_path / "runs")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --sync-batchnorm needs CUDA GPUs (SyncBatchNorm has no CPU implementation)"]


@pytest.mark.slow
def test_fscil_bench_run_works_under_torchrun(tmp_path):
    """``torchrun --nproc_per_node 2`` runs the CLI unchanged: one record, written by rank 0."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FSCIL_BENCH_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        # --standalone: the rendezvous store binds a port the system assigns (no free-port race)
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "fscil_bench.cli", "run",
         "-b", "glyphs100-tiny", "-m", "prototype", "--device", "cpu", "-o", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = list((tmp_path / "runs").glob("*/*/*/seed-*/record.json"))
    assert len(records) == 1
    assert '"world_size": 2' in records[0].read_text()
    assert result.stdout.count("runs complete") == 1
