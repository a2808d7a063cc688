"""The runner: drives one method through a benchmark's sessions under the FSCIL protocol.

For each session it hands the method only that session's training samples (a copy, so nothing
else of the pool is reachable), then evaluates it on the test images of every class seen so
far. The method sees test images, never test labels. Predictions are kept per sample, so every
metric can be recomputed later from the saved record.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .benchmarks import Benchmark
from .data.arrays import LabelledImages, iterate_images
from .metrics import summarize
from .protocol import Context, MemoryDeclaration, Method, Progress, Session, hparams_to_dict


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


def no_progress(iterable, desc: str = "", total: int | None = None):
    return iter(iterable)


@dataclass
class RunOptions:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path = Path(".cache")
    eval_batch_size: int = 512
    progress: Progress = no_progress
    log: Callable[[str], None] = print


def make_session(bench: Benchmark, t: int) -> Session:
    """Session ``t`` of ``bench``: its new classes and a copy of only its own training samples."""
    spec = bench.schedule.sessions[t]
    return Session(
        index=t,
        new_classes=spec.classes,
        num_seen=bench.schedule.num_seen(t),
        shots=spec.shots,
        train=LabelledImages(bench.train.subset(spec.train_indices), bench.train_transform, bench.eval_transform),
    )


@torch.no_grad()
def evaluate(method: Method, bench: Benchmark, num_seen: int, options: RunOptions, desc: str) -> np.ndarray:
    """Predicted class of every test image of the first ``num_seen`` classes (in test-set order)."""
    rows = np.flatnonzero(bench.test.labels < num_seen)
    batches = iterate_images(bench.test.images, bench.eval_transform, options.eval_batch_size, options.device, rows)
    total = -(-len(rows) // options.eval_batch_size)
    preds = []
    for x in options.progress(batches, desc=desc, total=total):
        logits = method.predict(x)
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(x), num_seen):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ProtocolError(f"predict returned {shape}, expected logits of shape ({len(x)}, {num_seen})")
        preds.append(logits.argmax(1).to("cpu", torch.int16))
    return torch.cat(preds).numpy()


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def run_method(bench: Benchmark, method_cls: type, preset: str, seed: int, options: RunOptions) -> RunResult:
    """Run ``method_cls`` with ``preset`` and ``seed`` through every session of ``bench``.

    A method that raises is caught: the result is ``failed`` with the traceback and the
    session it failed in.
    """
    try:
        hparams = method_cls.resolve_preset(preset, bench.family) if hasattr(method_cls, "resolve_preset") else None
    except KeyError as exc:
        return _failed({"preset": preset}, bench, 0, exc, {}, None, {}, [])
    config = {"preset": preset, "hparams": hparams_to_dict(hparams) if hparams is not None else {}}
    ctx = Context(
        device=options.device,
        seed=seed,
        generator=seed_everything(seed),
        num_classes_total=bench.schedule.num_classes,
        hparams=hparams,
        benchmark=bench.info(),
        cache_dir=options.cache_dir,
        progress=options.progress,
        log=options.log,
    )
    groups = bench.schedule.class_groups()
    preds: list[np.ndarray] = []
    timing: dict[str, Any] = {"fit_seconds": [], "eval_seconds": []}
    start = time.perf_counter()
    method = None
    t = 0
    try:
        method = method_cls()
        for t in range(len(bench.schedule)):
            session = make_session(bench, t)
            tic = time.perf_counter()
            (method.fit_base if t == 0 else method.fit_session)(session, ctx)
            timing["fit_seconds"].append(round(time.perf_counter() - tic, 4))
            tic = time.perf_counter()
            preds.append(evaluate(method, bench, session.num_seen, options, desc=f"eval {t}"))
            timing["eval_seconds"].append(round(time.perf_counter() - tic, 4))
            acc = float((preds[-1] == bench.test.labels[bench.test.labels < session.num_seen]).mean())
            options.log(f"  {method_cls.name} seed {seed} session {t}: accuracy {100 * acc:.2f}%")
    except Exception as exc:  # one method's crash must not stop the benchmark
        timing["total_seconds"] = round(time.perf_counter() - start, 4)
        return _failed(config, bench, t, exc, timing, method, ctx.extra, preds)
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
