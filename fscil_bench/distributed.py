"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node N -m fscil_bench.cli run ...`` (or the ``fscil-bench`` script)
starts N copies of the same command. :func:`init_from_env` joins them into one process group
from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). Every rank then runs the whole benchmark with the same seeds; only
:func:`fscil_bench.training.train_supervised` is data-parallel:

* every rank draws the same shuffled, augmented global batch from the shared seeded generator
  and keeps its own contiguous slice (:func:`batch_slice`), so the union over ranks is exactly
  the single-process batch;
* the model is wrapped in ``DistributedDataParallel`` (optionally with ``SyncBatchNorm``, GPU
  only), which averages gradients over ranks; the local loss is scaled by
  ``world_size * n_local / n_global`` (:func:`loss_scale`), so for a loss that is a mean over
  the batch the averaged gradient is the gradient of the global batch's mean loss, whatever
  the split;
* randomness inside the forward pass (dropout) is seeded per rank (:func:`rank_seed`), so ranks
  do not share masks;
* after training, buffers (BatchNorm running statistics) are copied from rank 0, so every rank
  holds the same model.

Incremental sessions and evaluation run on every rank identically (their cost is small next
to base training), so no result needs broadcasting; only rank 0 writes records and cache
files (:func:`is_main_process`), the others wait on a :func:`barrier`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another env:// launcher) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group described by torchrun's environment variables.

    The backend is NCCL for CUDA devices and gloo otherwise. On CUDA, each rank uses the GPU of
    its ``LOCAL_RANK`` (a bare ``cuda`` device becomes ``cuda:<local rank>``). Returns the device
    this rank should use. A no-op (returning ``device``) when not launched with several ranks.
    """
    if not launched_by_torchrun() or is_initialized():
        return device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def shutdown() -> None:
    """Leave the process group (if joined)."""
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process writes results (rank 0, or the only process)."""
    return rank() == 0


def is_data_parallel() -> bool:
    """Whether training should be split over several processes."""
    return world_size() > 1


def barrier() -> None:
    """Wait until every rank gets here (a no-op when not distributed)."""
    if is_initialized():
        dist.barrier()


def broadcast_object(value: T, src: int = 0) -> T:
    """Rank ``src``'s ``value`` on every rank (any picklable object; identity when not distributed)."""
    if not is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def batch_slice(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """The rows of a global batch of ``n`` samples that rank ``rank_`` trains on.

    Contiguous, as even as possible: the first ``n % world`` ranks take one row more. The slices
    of all ranks partition ``range(n)`` in order.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def local_part(n: int) -> tuple[slice, float]:
    """This rank's rows of a global batch of ``n`` samples and its :func:`loss_scale`.

    A batch smaller than the number of ranks is not split: every rank trains on all of it
    with scale 1 (the averaged gradient is then that of the whole batch too).
    """
    w = world_size()
    if n < w:
        return slice(0, n), 1.0
    part = batch_slice(n)
    return part, loss_scale(part.stop - part.start, n, w)


def loss_scale(n_local: int, n_global: int, world: int | None = None) -> float:
    """Factor on a rank's mean loss so DDP's gradient average equals the global mean's gradient.

    DDP averages gradients: ``g = (1/W) sum_r grad(s_r * L_r)`` with ``L_r`` the mean loss over the
    rank's ``n_r`` samples. With ``s_r = W * n_r / N`` this is ``(1/N) sum_r n_r grad(L_r)``, the
    gradient of the mean loss over all ``N`` samples.
    """
    w = world_size() if world is None else world
    return w * n_local / n_global


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """A seed for randomness that should differ between ranks (e.g. dropout masks)."""
    r = rank() if rank_ is None else rank_
    return (seed * 1_000_003 + r) % 2**63


def rank_rng(seed: int, device: torch.device) -> contextlib.AbstractContextManager:
    """A scope whose global torch random state is seeded per rank and restored on exit.

    Ranks then draw different dropout masks (and the like) inside the forward pass, while the
    random state outside the scope stays the same on every rank.
    """
    if not is_initialized():
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    devices = [device] if device.type == "cuda" else []
    stack.enter_context(torch.random.fork_rng(devices=devices))
    torch.manual_seed(rank_seed(seed))
    return stack


def pooled_mean(total: torch.Tensor, count: int) -> float:
    """``sum(total) / sum(count)`` over ranks (``total / count`` when not distributed)."""
    if not is_initialized():
        return float(total) / max(count, 1)
    both = torch.stack([total.detach().float().reshape(()), torch.tensor(float(count), device=total.device)])
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    return float(both[0]) / max(float(both[1]), 1.0)


class _Forward(nn.Module):
    """Routes DDP's forward through a method's own ``forward`` callable (e.g. ``model.embed``)."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], Any]):
        super().__init__()
        self.model = model
        self._fn = forward

    def forward(self, x: torch.Tensor) -> Any:
        return self._fn(x)


def wrap_model(model: nn.Module, forward: Callable[[torch.Tensor], Any] | None, device: torch.device,
               sync_batchnorm: bool = False) -> Callable[[torch.Tensor], Any]:
    """``model`` (called through ``forward`` when given) wrapped in ``DistributedDataParallel``.

    With ``sync_batchnorm`` (``fscil-bench run --sync-batchnorm``), BatchNorm layers are converted in
    place to ``SyncBatchNorm`` first, so batch statistics are those of the global batch;
    ``SyncBatchNorm`` needs a GPU. DDP is told the graph is static (the same parameters take part
    in every step): a custom ``forward`` may leave some of ``model``'s parameters unused, and a
    static graph handles that without searching the autograd graph at every step.
    """
    if sync_batchnorm:
        if device.type == "cpu":
            raise RuntimeError("SyncBatchNorm needs a GPU; train without --sync-batchnorm on the CPU")
        for name, child in list(model.named_children()):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    module = model if forward is None else _Forward(model, forward)
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, static_graph=True)


@torch.no_grad()
def sync_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics) to every rank."""
    if not is_initialized():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=src)
