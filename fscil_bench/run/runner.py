"""The runner: drives one method through a benchmark's sessions under the FSCIL protocol.

For each session it hands the method only that session's training samples (a copy, so nothing
else of the pool is reachable), then evaluates it on the test images of every class seen so
far. The method sees test images, never test labels. Predictions are kept per sample, so every
metric can be recomputed later from the saved record.

A method that exposes ``embed`` and ``classify`` is evaluated as ``classify(embed(x))``; the
features are kept for the session and, with the true test labels (which only the runner has),
give the neural-collapse diagnostics of :func:`fscil_bench.metrics.collapse_diagnostics`
(stored in the result's ``diagnostics``). A method with ``embed`` alone is evaluated with
``predict`` and embedded in a second pass for the diagnostics.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fscil_bench.benchmarks.benchmark import Benchmark
from fscil_bench.data.arrays import BatchTransform, LabelledImages, iterate_images
from fscil_bench.data.views import MethodViews
from fscil_bench.defaults import EVAL_BATCH_SIZE, default_cache_dir
from fscil_bench.metrics.collapse import collapse_diagnostics
from fscil_bench.metrics.descriptors import summarize
from fscil_bench.protocol import (
    Context,
    MemoryDeclaration,
    Method,
    Progress,
    Session,
    hparams_to_dict,
    no_progress,
    uses_test_checkpoint,
)
from fscil_bench.run.overrides import resolve


class ProtocolError(RuntimeError):
    """A method that answered outside the protocol (e.g. logits of the wrong shape)."""


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
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path = field(default_factory=default_cache_dir)
    eval_batch_size: int = EVAL_BATCH_SIZE
    progress: Progress = no_progress
    log: Callable[[str], None] = print
    weights_dir: Path | None = None
    bf16: bool = False
    sync_batchnorm: bool = False


def method_views(method_cls: type, hparams: Any, bench: Benchmark) -> MethodViews:
    """The method's own train and test views on ``bench`` (:meth:`MethodBase.views`; none for a
    method without that hook)."""
    declare = getattr(method_cls, "views", None)
    views = declare(hparams, bench.view_inputs()) if callable(declare) else None
    return views if isinstance(views, MethodViews) else MethodViews()


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
    """What evaluating one session yields: the predicted class of every test image of the seen
    classes (in test-set order), their true labels, and their ``embed`` features ``(N, d)`` on
    the CPU when the method has ``embed`` (None otherwise, or ``feature_error`` says why not)."""

    preds: np.ndarray
    labels: np.ndarray
    features: torch.Tensor | None = None
    feature_error: str | None = None


def _optional(method: object, name: str) -> Callable | None:
    fn = getattr(method, name, None)
    return fn if callable(fn) else None


def _check_logits(logits: Any, n: int, num_seen: int, what: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.shape != (n, num_seen):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ProtocolError(f"{what} returned {shape}, expected logits of shape ({n}, {num_seen})")


def _check_features(features: Any, n: int) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or len(features) != n:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ProtocolError(f"embed returned {shape}, expected features of shape ({n}, d)")


@torch.no_grad()
def evaluate_session(method: Method, bench: Benchmark, num_seen: int, options: RunOptions, desc: str,
                     transform: BatchTransform | None = None) -> SessionEvaluation:
    """Evaluate ``method`` on the test images of the first ``num_seen`` classes, shown through
    ``transform`` (the method's test view; default: the benchmark's test transform).

    With ``embed`` and ``classify`` the logits are ``classify(embed(x))`` and the features are
    kept (one forward pass); with ``embed`` only, ``predict(x)`` gives the logits and ``embed(x)``
    the features (a failing ``embed`` is noted in ``feature_error``, not raised); otherwise
    ``predict(x)``. Logits or features of the wrong shape raise :class:`ProtocolError`.
    """
    rows = np.flatnonzero(bench.test.labels < num_seen)
    batches = iterate_images(bench.test.images, transform or bench.eval_transform, options.eval_batch_size,
                             options.device, rows)
    total = -(-len(rows) // options.eval_batch_size)
    embed, classify = _optional(method, "embed"), _optional(method, "classify")
    preds: list[torch.Tensor] = []
    features: list[torch.Tensor] | None = [] if embed is not None else None
    feature_error = None
    for x in options.progress(batches, desc=desc, total=total):
        if embed is not None and classify is not None:
            f = embed(x)
            _check_features(f, len(x))
            logits = classify(f)
            _check_logits(logits, len(x), num_seen, "classify")
        else:
            logits = method.predict(x)
            _check_logits(logits, len(x), num_seen, "predict")
            f = None
            if features is not None:
                try:
                    f = embed(x)
                    _check_features(f, len(x))
                except Exception as exc:  # features only feed the diagnostics: never fail the run
                    feature_error, features = f"{type(exc).__name__}: {exc}", None
        preds.append(logits.argmax(1).to("cpu", torch.int16))
        if features is not None:
            features.append(f.detach().to("cpu", torch.float32))
    labels = bench.test.labels[rows]
    feats = torch.cat(features) if features else None
    return SessionEvaluation(torch.cat(preds).numpy(), labels, feats, feature_error)


#: What the record of a run whose base checkpoint was chosen on the test set says (``extra``).
NOT_PROTOCOL_CLEAN = "base checkpoint chosen by base-class test accuracy (best-on-test): not protocol-clean"


def base_test_scorer(bench: Benchmark, transform: BatchTransform | None, options: RunOptions) -> Callable:
    """For the best-on-test checkpoint variant only: a function from a predict function (images ->
    logits over the base classes) to its accuracy on the base classes' test images, which the runner
    alone can measure (the method never holds the labels)."""
    rows = np.flatnonzero(bench.test.labels < bench.schedule.num_seen(0))
    labels = torch.from_numpy(bench.test.labels[rows])

    @torch.no_grad()
    def score(predict: Callable[[torch.Tensor], torch.Tensor]) -> float:
        batches = iterate_images(bench.test.images, transform or bench.eval_transform, options.eval_batch_size,
                                 options.device, rows)
        preds = torch.cat([predict(x).argmax(1).cpu() for x in batches])
        return float((preds == labels).float().mean())

    return score


DIAGNOSTIC_KEYS = ("nc1", "equinorm", "equiangularity", "self_duality", "alignment")


def session_diagnostics(method: object, evaluation: SessionEvaluation, groups: list[tuple[int, int]]) -> tuple[dict[str, Any], float]:
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
        num_seen = groups[-1][1]
        weights_fn = _optional(method, "classifier_weights")
        weights = weights_fn() if weights_fn is not None else None
        if weights is not None:
            weights = torch.as_tensor(weights).detach().to("cpu", torch.float32)
            expected = (num_seen, evaluation.features.shape[1])
            if tuple(weights.shape) != expected:
                raise ProtocolError(f"classifier_weights returned {tuple(weights.shape)}, expected {expected}")
            weights = weights.numpy()
        entry = collapse_diagnostics(evaluation.features.numpy(), evaluation.labels, groups, weights)
    except Exception as exc:
        entry = {**dict.fromkeys(DIAGNOSTIC_KEYS), "error": f"{type(exc).__name__}: {exc}"}
    return entry, round(time.perf_counter() - tic, 4)


def run_method(bench: Benchmark, method_cls: type, preset: str, seed: int, options: RunOptions,
               overrides: Mapping[str, Any] | None = None) -> RunResult:
    """Run ``method_cls`` with ``preset`` (changed by ``overrides``, dotted path -> value, see
    :mod:`fscil_bench.run.overrides`) and ``seed`` through every session of ``bench``.

    A method that raises is caught: the result is ``failed`` with the traceback and the
    session it failed in.
    """
    try:
        hparams = resolve(method_cls, preset, bench.family, overrides or {}).hparams
        views = method_views(method_cls, hparams, bench)
    except Exception as exc:  # an unknown preset, override or view
        return _failed({"preset": preset, "overrides": dict(overrides or {})}, bench, 0, exc, {}, None, {}, [])
    config = {"preset": preset, "overrides": dict(overrides or {}),
              "hparams": hparams_to_dict(hparams) if hparams is not None else {}}
    if views.identity is not None:
        config["views"] = views.identity
    ctx = Context.create(bench.info(), hparams, seed, device=options.device, cache_dir=options.cache_dir,
                         progress=options.progress, log=options.log, weights_dir=options.weights_dir,
                         bf16=options.bf16,
                         sync_batchnorm=options.sync_batchnorm, views=views.identity)
    if uses_test_checkpoint(hparams):
        ctx.base_test_accuracy = base_test_scorer(bench, views.test, options)
        ctx.extra["not_protocol_clean"] = NOT_PROTOCOL_CLEAN
    groups = bench.schedule.class_groups()
    preds: list[np.ndarray] = []
    timing: dict[str, Any] = {"fit_seconds": [], "eval_seconds": []}
    start = time.perf_counter()
    method = None
    diagnostics: dict[str, Any] | None = None
    t = 0
    try:
        method = method_cls()
        if _optional(method, "embed") is not None:
            diagnostics = {"sessions": [], "seconds": []}
        for t in range(len(bench.schedule)):
            session = make_session(bench, t, views)
            tic = time.perf_counter()
            (method.fit_base if t == 0 else method.fit_session)(session, ctx)
            timing["fit_seconds"].append(round(time.perf_counter() - tic, 4))
            tic = time.perf_counter()
            evaluation = evaluate_session(method, bench, session.num_seen, options, desc=f"eval {t}", transform=views.test)
            preds.append(evaluation.preds)
            timing["eval_seconds"].append(round(time.perf_counter() - tic, 4))
            if diagnostics is not None:
                entry, seconds = session_diagnostics(method, evaluation, groups[: t + 1])
                diagnostics["sessions"].append(entry)
                diagnostics["seconds"].append(seconds)
            acc = float((evaluation.preds == evaluation.labels).mean())
            options.log(f"  {method_cls.name} seed {seed} session {t}: accuracy {100 * acc:.2f}%")
    except Exception as exc:  # one method's crash must not stop the benchmark
        timing["total_seconds"] = round(time.perf_counter() - start, 4)
        failed = _failed(config, bench, t, exc, timing, method, ctx.extra, preds)
        failed.diagnostics = diagnostics
        return failed
    timing["total_seconds"] = round(time.perf_counter() - start, 4)
    labels = [bench.test.labels[bench.test.labels < bench.schedule.num_seen(i)] for i in range(len(preds))]
    return RunResult(
        status="completed",
        config=config,
        predictions=preds,
        test_labels=bench.test.labels,
        metrics=summarize(labels, preds, groups),
        timing=timing,
        memory=_memory(method),
        extra=ctx.extra,
        sessions_done=len(preds),
        diagnostics=diagnostics,
    )


def _failed(config: dict, bench: Benchmark, session: int, exc: BaseException, timing: dict, method: object,
            extra: dict, preds: list[np.ndarray]) -> RunResult:
    return RunResult(
        status="failed",
        config=config,
        predictions=preds,
        test_labels=bench.test.labels,
        metrics=None,
        timing=timing,
        memory=_memory(method),
        extra=extra,
        error={"type": type(exc).__name__, "message": str(exc), "session": session, "traceback": traceback.format_exc()},
        sessions_done=len(preds),
    )


def _memory(method: object) -> dict[str, Any]:
    declare = getattr(method, "memory", None)
    if declare is None:
        return {"declared": False}
    try:
        decl = declare()
    except Exception as exc:
        return {"declared": False, "error": f"{type(exc).__name__}: {exc}"}
    if isinstance(decl, MemoryDeclaration):
        return {"declared": True, **decl.__dict__}
    return {"declared": True, **dict(decl)}
