"""The runner: drives one method through a benchmark's sessions under the FSCIL protocol.

For each session it hands the method only that session's training samples (a copy, so nothing
else of the pool is reachable), then evaluates it on the test images of every class seen so far,
shown in a hidden random order (:mod:`fscil_bench.run.order`) and mapped back to test-set order.
The method sees test images, never test labels. Predictions are kept per sample, so every
metric can be recomputed later from the saved record.

The method runs in a worker process (:mod:`fscil_bench.run.workers`, inside a sandbox where the
machine allows one) that holds only what the protocol hands it; the runner keeps the benchmark,
scores the predictions, and computes the neural-collapse diagnostics of
:func:`fscil_bench.metrics.collapse_diagnostics` from the features the worker returns (stored in
the result's ``diagnostics``; see :mod:`fscil_bench.run.host` for which methods give features).
Isolation ``none`` runs the method in this process, through the same calls.

A run that fails (the method raises, passes a time or memory limit, or its worker dies) is
recorded as failed, with the session and the reason; nothing else is affected.
"""

from __future__ import annotations

import contextlib
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fscil_bench import distributed
from fscil_bench.benchmarks.benchmark import Benchmark
from fscil_bench.data.arrays import LabelledImages
from fscil_bench.data.views import MethodViews
from fscil_bench.defaults import EVAL_BATCH_SIZE, default_cache_dir
from fscil_bench.metrics.collapse import collapse_diagnostics
from fscil_bench.metrics.descriptors import summarize
from fscil_bench.protocol import Progress, Session, no_progress
from fscil_bench.run import order as evaluation_order
from fscil_bench.run.host import ProtocolError, views_of
from fscil_bench.run.limits import Limits, default_limits
from fscil_bench.run.remote import LocalHost, RemoteError, WorkerFailure, WorkerHost, open_host
from fscil_bench.run.workers import WorkerPool, resolve_isolation

__all__ = ["ProtocolError", "RunOptions", "RunResult", "SessionEvaluation", "make_session", "method_views",
           "run_method", "session_diagnostics"]


@dataclass
class RunResult:
    """The outcome of one (benchmark, method, preset, seed) run."""

    status: str  # "completed" or "failed"
    config: dict[str, Any]
    predictions: list[np.ndarray]
    test_labels: np.ndarray
    metrics: dict[str, Any] | None
    timing: dict[str, Any]
    memory: dict[str, Any]
    extra: dict[str, Any]
    error: dict[str, Any] | None = None
    sessions_done: int = 0
    #: ``{"sessions": [one dict per evaluated session], "seconds": [...]}``, or None when the
    #: method has no ``embed`` (see :func:`session_diagnostics`).
    diagnostics: dict[str, Any] | None = None
    #: Peak memory of the run above its start (see :mod:`fscil_bench.run.peak_memory`).
    peak_memory: dict[str, Any] | None = None
    #: ``{"level": "sandbox" | "process" | "none", "limits": {...} | None}``.
    isolation: dict[str, Any] = field(default_factory=dict)
    #: How to replay the evaluation batches (:meth:`fscil_bench.run.order.EvaluationOrder.to_record`).
    evaluation_order: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunOptions:
    """How runs are carried out (not what they compute, except ``bf16``).

    Attributes:
        device: where methods train and predict.
        cache_dir: shared caches (datasets, base models, features).
        eval_batch_size: test images per forward pass.
        progress, log: progress bars and log lines.
        weights_dir: the folder of known pretrained weights (default: ``<cache_dir>/weights``).
        bf16: train under bfloat16 autocast (an opt-in; recorded in the run's record).
        sync_batchnorm: data-parallel training normalises BatchNorm over the global batch.
        isolation: ``auto`` (a sandboxed worker where the machine allows it, else a plain
            worker process), ``sandbox``, ``process`` or ``none`` (in this process, for debugging).
        limits: the workers' limits (``None``: the preset's defaults,
            :func:`fscil_bench.run.limits.default_limits`).
        hidden_paths: more paths a sandboxed worker must not read (data roots, results folders).
        order_seeds: replay the evaluation order of a record (its ``evaluation_order.seeds``);
            ``None`` draws fresh seeds.
        pool: the :class:`~fscil_bench.run.workers.WorkerPool` runs share (a grid passes one);
            ``None`` starts one per run.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path = field(default_factory=default_cache_dir)
    eval_batch_size: int = EVAL_BATCH_SIZE
    progress: Progress = no_progress
    log: Callable[[str], None] = print
    weights_dir: Path | None = None
    bf16: bool = False
    sync_batchnorm: bool = False
    isolation: str = "auto"
    limits: Limits | None = None
    hidden_paths: tuple[Path, ...] = ()
    order_seeds: Sequence[int] | None = None
    pool: WorkerPool | None = None


def method_views(method_cls: type, hparams: Any, bench: Benchmark) -> MethodViews:
    """The method's own train and test views on ``bench`` (:meth:`MethodBase.views`; none for a
    method without that hook). Under isolation the method's worker computes them."""
    return views_of(method_cls, hparams, bench.view_inputs())


def make_session(bench: Benchmark, t: int, views: MethodViews | None = None) -> Session:
    """Session ``t`` of ``bench``: its new classes and a copy of only its own training samples,
    with the method's ``views`` attached (the benchmark's transforms where it has none)."""
    spec = bench.schedule.sessions[t]
    views = views or MethodViews()
    return Session(
        index=t,
        new_classes=spec.classes,
        num_seen=bench.schedule.num_seen(t),
        shots=spec.shots,
        train=LabelledImages(bench.train.subset(spec.train_indices), views.train or bench.train_transform,
                             views.test or bench.eval_transform),
    )


@dataclass
class SessionEvaluation:
    """What evaluating one session yields, in test-set order: the predicted class of every test
    image of the seen classes, their true labels, their ``embed`` features ``(N, d)`` when the
    method has ``embed`` (None otherwise, or ``feature_error`` says why not), and the method's
    ``classifier_weights()`` (None, or ``weights_error`` says why not)."""

    preds: np.ndarray
    labels: np.ndarray
    features: torch.Tensor | None = None
    feature_error: str | None = None
    weights: np.ndarray | None = None
    weights_error: str | None = None


DIAGNOSTIC_KEYS = ("nc1", "equinorm", "equiangularity", "self_duality", "alignment")


def session_diagnostics(evaluation: SessionEvaluation, groups: list[tuple[int, int]]) -> tuple[dict[str, Any], float]:
    """The neural-collapse diagnostics of one evaluated session and the seconds they took.

    ``groups`` are the class groups of the sessions so far. The classifier is the method's
    ``classifier_weights()`` (``(num_seen, d)``, or None). Any failure (no features, a bad
    classifier shape, an error in the metrics) gives every value None plus an ``"error"``
    string: the diagnostics never fail a run.
    """
    tic = time.perf_counter()
    try:
        if evaluation.features is None:
            raise RuntimeError(f"no features from embed ({evaluation.feature_error or 'nothing evaluated'})")
        if evaluation.weights_error is not None:
            raise RuntimeError(f"classifier_weights failed ({evaluation.weights_error})")
        features = torch.as_tensor(evaluation.features, dtype=torch.float32).numpy()
        weights = evaluation.weights
        if weights is not None:
            expected = (groups[-1][1], features.shape[1])
            if tuple(weights.shape) != expected:
                raise ProtocolError(f"classifier_weights returned {tuple(weights.shape)}, expected {expected}")
            weights = np.asarray(weights, dtype=np.float32)
        entry = collapse_diagnostics(features, evaluation.labels, groups, weights)
    except Exception as exc:
        entry = {**dict.fromkeys(DIAGNOSTIC_KEYS), "error": f"{type(exc).__name__}: {exc}"}
    return entry, round(time.perf_counter() - tic, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _host(method: Any, options: RunOptions, limits: Limits) -> Iterator[LocalHost | WorkerHost]:
    """The method's host at the isolation ``options`` ask for (a pool of one run when none is given)."""
    if options.isolation == "none":
        host = open_host(method, options, limits, None)
        yield host
        return
    pool, own = options.pool, None
    if pool is None:
        level, note = resolve_isolation(options.isolation)
        if level == "none":
            yield open_host(method, options, limits, None)
            return
        if note:
            options.log(note)
        ref_file = getattr(getattr(method, "ref", None), "file", "")
        pool = own = WorkerPool(level, options.cache_dir, options.hidden_paths, [Path(ref_file)] if ref_file else [])
    host = open_host(method, options, limits, pool)
    try:
        yield host
    except BaseException:  # interrupted: stop the worker now rather than wait for it
        host.kill()
        raise
    finally:
        host.close()
        if own is not None:
            own.close()


def _error(exc: BaseException, session: int) -> dict[str, Any]:
    if isinstance(exc, RemoteError):
        return {"type": exc.type, "message": exc.message, "session": session, "traceback": exc.traceback}
    if isinstance(exc, WorkerFailure):
        return {"type": exc.kind, "message": f"session {session}: {exc}", "session": session, "traceback": ""}
    return {"type": type(exc).__name__, "message": str(exc), "session": session, "traceback": traceback.format_exc()}


def run_method(bench: Benchmark, method: Any, preset: str, seed: int, options: RunOptions,
               overrides: Mapping[str, Any] | None = None) -> RunResult:
    """Run ``method`` (a method class, or a :class:`~fscil_bench.run.catalog.MethodInfo` /
    :class:`~fscil_bench.run.catalog.MethodRef`) with ``preset`` (changed by ``overrides``, dotted
    path -> value, see :mod:`fscil_bench.run.overrides`) and ``seed`` through every session of
    ``bench``, isolated as ``options.isolation`` says. The method's host resolves the preset and
    the method's own views (:mod:`fscil_bench.run.host`).

    A method that raises, passes a limit or whose worker dies is caught: the result is
    ``failed`` with the error, the session it failed in and the sessions evaluated before.
    """
    limits = options.limits or default_limits(preset)
    order = evaluation_order.EvaluationOrder(options.eval_batch_size, options.order_seeds)
    groups = bench.schedule.class_groups()
    preds: list[np.ndarray] = []
    timing: dict[str, Any] = {"fit_seconds": [], "eval_seconds": []}
    config: dict[str, Any] = {"preset": preset, "overrides": dict(overrides or {})}
    diagnostics: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    start = time.perf_counter()
    with _host(method, options, limits) as host:
        isolation = {"level": host.level, "limits": None if host.level == "none" else limits.to_record()}
        t = 0
        try:
            env = {}
            if host.level != "none" and distributed.launched_by_torchrun():  # the ranks' workers form their own group,
                # on a port rank 0 picks, with their own store (not the one torchrun's agent hosts for the runners)
                env["MASTER_PORT"] = str(distributed.broadcast_object(_free_port() if distributed.is_main_process() else None))
                env["TORCHELASTIC_USE_AGENT_STORE"] = "False"
            tic = time.perf_counter()
            config = host.load(preset, bench, seed, None if host.level == "none" else limits.load_seconds, env,
                               dict(overrides or {}))
            timing["load_seconds"] = round(time.perf_counter() - tic, 4)
            if host.has_embed:
                diagnostics = {"sessions": [], "seconds": []}
            for t in range(len(bench.schedule)):
                evaluation = _session(host, bench, t, order, options, _deadline(host, limits.session_seconds), timing)
                preds.append(evaluation.preds)
                if diagnostics is not None:
                    entry, seconds = session_diagnostics(evaluation, groups[: t + 1])
                    diagnostics["sessions"].append(entry)
                    diagnostics["seconds"].append(seconds)
                acc = float((evaluation.preds == evaluation.labels).mean())
                options.log(f"  {getattr(method, 'name', '?')} seed {seed} session {t}: accuracy {100 * acc:.2f}%")
        except Exception as exc:  # one method's failure must not stop the benchmark
            error = _error(exc, t)
        memory, extra, peak_memory = host.memory(), host.extra, host.peak_memory()
    timing["total_seconds"] = round(time.perf_counter() - start, 4)
    done = error is None
    labels = [bench.test.labels[bench.test.labels < bench.schedule.num_seen(i)] for i in range(len(preds))]
    return RunResult(
        status="completed" if done else "failed",
        config=config,
        predictions=preds,
        test_labels=bench.test.labels,
        metrics=summarize(labels, preds, groups) if done else None,
        timing=timing,
        memory=memory,
        extra=extra,
        error=error,
        sessions_done=len(preds),
        diagnostics=diagnostics,
        peak_memory=peak_memory,
        isolation=isolation,
        evaluation_order=order.to_record(),
    )


def _deadline(host: LocalHost | WorkerHost, seconds: float) -> float | None:
    return None if host.level == "none" else time.monotonic() + seconds


def _session(host: LocalHost | WorkerHost, bench: Benchmark, t: int, order: evaluation_order.EvaluationOrder,
             options: RunOptions, deadline: float | None, timing: dict[str, Any]) -> SessionEvaluation:
    """Fit session ``t`` and evaluate on the seen classes' test images in a hidden order."""
    session = make_session(bench, t)
    tic = time.perf_counter()
    host.fit(session, deadline)
    timing["fit_seconds"].append(round(time.perf_counter() - tic, 4))
    tic = time.perf_counter()
    rows = np.flatnonzero(bench.test.labels < session.num_seen)
    shown = order.next(len(rows))
    answer = host.evaluate(t, bench.test.images, rows[shown], bench.eval_transform, options.eval_batch_size, deadline)
    features = None if answer.features is None else evaluation_order.restore(np.asarray(answer.features), shown)
    evaluation = SessionEvaluation(evaluation_order.restore(np.asarray(answer.preds), shown), bench.test.labels[rows],
                                   None if features is None else torch.from_numpy(np.ascontiguousarray(features, np.float32)),
                                   answer.feature_error, answer.weights, answer.weights_error)
    timing["eval_seconds"].append(round(time.perf_counter() - tic, 4))
    return evaluation
