"""Run a benchmark grid as separate jobs, through submitit: local worker processes or a Slurm job array.

A grid is every (benchmark, method, seed) of a ``fscil-bench run`` command; each becomes one
:class:`GridJob`, which a worker process runs with :func:`run_job`:

* ``--executor local --workers N``: at most N jobs at a time, each in its own process on this
  machine (submitit's ``LocalExecutor``); with CUDA, job slots take the GPUs in turn.
* ``--executor slurm``: one Slurm job array, one array task per job (submitit's
  ``SlurmExecutor.map_array``), with the partition, GPUs, time, memory and CPUs given;
  ``--workers`` caps how many tasks run at once. A job with several GPUs runs data-parallel
  (one task per GPU, the process group set up from Slurm's variables).

Many writers are safe because the results store shares nothing between runs: each run writes
only its own folder, predictions first and then the record, each atomically (a temporary file
renamed into place). A job that starts skips a key whose record is complete; while it runs it
holds an exclusive lock on the key (``.lock`` in the run's folder, released by the operating
system even when the process is killed), so a second worker given the same key waits, then
finds the record and skips it. A resubmitted grid submits only unfinished keys.

submitit is an optional dependency (``pip install 'fscil-bench[cluster]'``); the inline
executor and the rest of the package never import it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fscil_bench.cache import exclusive_lock


class ExecutorError(RuntimeError):
    """The grid cannot be submitted (e.g. submitit missing, no Slurm on this machine)."""


@dataclass(frozen=True)
class GridJob:
    """One (benchmark, method, seed) run and everything a fresh process needs to do it.

    Paths are absolute, so a worker started in another folder (or on another node sharing the
    file system) finds the same results store, cache and plugins.
    """

    benchmark: str
    method: str
    seed: int
    preset: str
    output: str
    cache_dir: str
    data_root: str | None = None
    device: str = "cpu"
    plugins: tuple[str, ...] = ()
    force: bool = False
    command: str | None = None
    threads: int | None = None  # torch threads in the worker (None: torch's default)
    sync_batchnorm: bool = False
    bf16: bool = False
    weights_dir: str | None = None
    overrides: tuple[Any, ...] = ()  # fscil_bench.run.overrides.Override, as the command gave them
    run_file: tuple[tuple[str, str], ...] | None = None  # the run file's path and sha256, for the record

    @property
    def label(self) -> str:
        changes = f" with {', '.join(map(str, self.overrides))}" if self.overrides else ""
        return f"{self.benchmark} {self.method} [{self.preset}{changes}] seed {self.seed}"


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each array task.

    Attributes:
        folder: where submitit writes the sbatch script, pickled jobs and logs (must be on a file
            system the compute nodes share).
        partition: Slurm partition (``None``: the cluster's default).
        gpus: GPUs per job; more than one runs the job data-parallel, one process per GPU.
        time_min: wall-time limit per job, in minutes.
        mem_gb: memory per job, in GB.
        cpus_per_task: CPUs per process.
        parallelism: at most this many array tasks at once (``None``: no limit of ours).
    """

    folder: str
    partition: str | None = None
    gpus: int = 1
    time_min: int = 240
    mem_gb: int = 32
    cpus_per_task: int = 8
    parallelism: int | None = None


def import_submitit() -> Any:
    """The submitit module, or :class:`ExecutorError` saying how to install it."""
    try:
        import submitit
    except ImportError as exc:
        raise ExecutorError("the local and slurm executors need submitit: pip install 'submitit>=1.5' "
                            "(or the package's 'cluster' extra)") from exc
    return submitit


def key_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on a run's folder (its ``.lock`` file); waits while another process
    holds it. The kernel drops the lock when its holder exits, so a killed job leaves none behind."""
    return exclusive_lock(run_dir / ".lock")


def run_job(job: GridJob) -> tuple[str, str]:
    """Run one grid job in this process; returns ``(status, summary line)``.

    The status is "completed", "failed" (the method raised; its record says why) or "skipped"
    (the record was already complete). Under a submitit job of several tasks (a Slurm job with
    several GPUs) the tasks form one process group first (``torch.distributed``, from the job's
    variables), and only rank 0 takes the key's lock and writes.
    """
    import torch

    from fscil_bench import distributed
    from fscil_bench.benchmarks.benchmark import LoadOptions
    from fscil_bench.benchmarks.registry import get_benchmark
    from fscil_bench.protocol import no_progress
    from fscil_bench.results.store import ResultsStore, RunKey
    from fscil_bench.run.grid import run_grid
    from fscil_bench.run.methods import discover
    from fscil_bench.run.overrides import resolve
    from fscil_bench.run.progress import log
    from fscil_bench.run.runner import RunOptions

    if job.threads:
        torch.set_num_threads(job.threads)
    if os.environ.get("SUBMITIT_EXECUTOR"):  # a submitit job: with several tasks, they train together
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    device = distributed.init_from_env(torch.device(job.device))
    try:
        registry = discover(list(job.plugins))
        if job.method not in registry.methods:
            detail = "; ".join(registry.errors.values())
            raise ExecutorError(f"method {job.method!r} is not registered in the worker" + (f" ({detail})" if detail else ""))
        store = ResultsStore(job.output)
        spec = get_benchmark(job.benchmark)
        chosen = resolve(registry.get(job.method), job.preset, spec.family, job.overrides)
        key = RunKey(spec.id, job.method, chosen.id, job.seed, track=chosen.track)
        quiet = not distributed.is_main_process()
        options = RunOptions(device=device, cache_dir=Path(job.cache_dir), progress=no_progress,
                             log=(lambda msg: None) if quiet else log, bf16=job.bf16, sync_batchnorm=job.sync_batchnorm,
                             weights_dir=Path(job.weights_dir) if job.weights_dir else None)
        load_options = LoadOptions(cache_dir=Path(job.cache_dir), data_root=Path(job.data_root) if job.data_root else None,
                                   log=options.log)
        lock = key_lock(store.run_dir(key)) if distributed.is_main_process() else contextlib.nullcontext()
        with lock:
            outcomes = run_grid([job.benchmark], [job.method], [job.seed], job.preset, registry, store, options,
                                load_options, force=job.force, command=job.command, echo=lambda msg: None,
                                overrides=job.overrides, run_file=dict(job.run_file) if job.run_file else None)
    finally:
        distributed.shutdown()
    return outcomes[0].status, outcomes[0].summary


def run_local(jobs: Sequence[GridJob], workers: int, folder: Path, echo: Callable[[str], None] = print,
              gpus: int = 0, poll_seconds: float = 0.2) -> list[tuple[GridJob, str, str]]:
    """Run ``jobs`` in at most ``workers`` processes at a time; returns ``(job, status, summary)``.

    With ``gpus`` > 0, the worker slots use GPUs ``0 .. gpus-1`` in turn (one GPU per job). A job
    whose process dies is reported as "error" with the reason; the others go on. Interrupting
    this function cancels the running jobs (their runs are redone on the next call).
    """
    if workers < 1:
        raise ExecutorError(f"--workers must be at least 1, not {workers}")
    submitit = import_submitit()
    executor = submitit.LocalExecutor(folder=str(folder))
    pending = list(jobs)
    free_slots = list(range(workers))
    running: dict[Any, tuple[GridJob, int]] = {}
    results: list[tuple[GridJob, str, str]] = []
    try:
        while pending or running:
            while pending and free_slots:
                slot = free_slots.pop(0)
                params: dict[str, Any] = {"timeout_min": 7 * 24 * 60}
                job = pending.pop(0)
                if gpus:  # the job sees one GPU, as cuda:0
                    params.update(gpus_per_node=1, visible_gpus=(slot % gpus,))
                    job = replace(job, device="cuda")
                executor.update_parameters(**params)
                running[executor.submit(run_job, job)] = (job, slot)
            finished = [handle for handle in running if handle.done()]
            for handle in finished:
                job, slot = running.pop(handle)
                free_slots.append(slot)
                try:
                    status, summary = handle.result()
                except Exception as exc:  # the worker process died or raised outside the method
                    reason = str(exc).strip().splitlines()
                    status, summary = "error", f"{job.label}: worker failed ({reason[-1] if reason else type(exc).__name__})"
                results.append((job, status, summary))
                echo(summary)
            if not finished:
                time.sleep(poll_seconds)
    except BaseException:
        for handle in running:
            with contextlib.suppress(Exception):
                handle.cancel(check=False)
        raise
    return results


def submit_slurm(jobs: Sequence[GridJob], options: SlurmOptions) -> list[Any]:
    """Submit ``jobs`` as one Slurm job array (a single job is submitted as a plain job).

    Returns submitit's job handles (ids ``<array id>_<task index>``). Needs ``sbatch`` and
    ``srun`` on this machine.
    """
    if not jobs:
        return []
    submitit = import_submitit()
    try:
        executor = submitit.SlurmExecutor(folder=options.folder)
    except RuntimeError as exc:
        raise ExecutorError(f"cannot submit to Slurm from this machine: {exc}") from exc
    tasks = max(1, options.gpus)
    params: dict[str, Any] = {
        "job_name": "fscil-bench",
        "time": options.time_min,
        "mem": f"{options.mem_gb}GB",
        "nodes": 1,
        "ntasks_per_node": tasks,
        "cpus_per_task": options.cpus_per_task,
        "array_parallelism": options.parallelism or len(jobs),
    }
    if options.gpus:
        params["gpus_per_node"] = options.gpus
    if options.partition:
        params["partition"] = options.partition
    executor.update_parameters(**params)
    if options.gpus:  # each task trains on the GPU of its local rank
        jobs = [replace(j, device="cuda") for j in jobs]
    return executor.map_array(run_job, list(jobs))
