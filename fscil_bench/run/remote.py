"""The runner's handle on a method: in its own process, or in a worker.

Both hosts answer the same calls (``load``, ``fit``, ``evaluate``, ``memory``, ``extra``), so the
runner drives a method the same way at every isolation level:

* :class:`LocalHost` (isolation ``none``) calls a :class:`~fscil_bench.run.host.MethodHost` in
  this process; limits are not enforced.
* :class:`WorkerHost` (``process`` and ``sandbox``) sends each call to a worker
  (:mod:`fscil_bench.run.worker`). Images cross through files in the worker's inbox, written
  once per session and memory-mapped by the worker: the training samples of the session, and
  the seen classes' test images in the order they are shown. Answers are checked (shapes, class
  range) before the runner uses them. A call that passes its deadline, or a worker that dies,
  raises :class:`WorkerFailure` with one line saying what happened.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fscil_bench.benchmarks.benchmark import Benchmark
from fscil_bench.data.arrays import BatchTransform, iterate_images
from fscil_bench.protocol import Session, no_progress
from fscil_bench.run import wire
from fscil_bench.run.catalog import MethodRef
from fscil_bench.run.host import HostEvaluation, MethodHost, view_inputs_to_json
from fscil_bench.run.limits import Limits
from fscil_bench.run.workers import WorkerConnection, WorkerPool

#: Bytes allowed per image in an evaluation answer (predictions and features up to 4,096 floats).
ANSWER_BYTES_PER_IMAGE = 4 * 4096 + 16
WRITE_CHUNK = 512


class RemoteError(RuntimeError):
    """An exception raised by the method inside its worker (type, message and traceback)."""

    def __init__(self, entry: dict[str, Any]):
        self.type = str(entry.get("type") or "Error")
        self.message = str(entry.get("message") or "")
        self.traceback = str(entry.get("traceback") or "")
        super().__init__(self.message)


class WorkerFailure(RuntimeError):
    """The worker passed a limit, died or broke the protocol (``kind``: ``TimeLimitExceeded``,
    ``WorkerDied``, ``ProtocolError``)."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def base_test_scorer(bench: Benchmark, transform: BatchTransform | None, options: Any) -> Callable:
    """For the best-on-test checkpoint variant only, in this process: a function from a predict
    function (images -> logits over the base classes) to its accuracy on the base classes' test
    images, which the runner alone can measure. A worker is never given one: answering it would
    tell a method how well it guesses the test labels, so those presets run with isolation
    ``none`` only."""
    rows = np.flatnonzero(bench.test.labels < bench.schedule.num_seen(0))
    labels = torch.from_numpy(bench.test.labels[rows])

    @torch.no_grad()
    def score(predict: Callable[[torch.Tensor], torch.Tensor]) -> float:
        batches = iterate_images(bench.test.images, transform or bench.eval_transform, options.eval_batch_size,
                                 options.device, rows)
        preds = torch.cat([predict(x).argmax(1).cpu() for x in batches])
        return float((preds == labels).float().mean())

    return score


class LocalHost:
    """A method in this process (isolation ``none``)."""

    level = "none"

    def __init__(self, method_cls: type, options: Any):
        self.method_cls, self.options = method_cls, options
        self.host: MethodHost | None = None

    def load(self, preset: str, bench: Benchmark, seed: int, seconds: float | None,
             env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        o = self.options
        self.host = MethodHost(self.method_cls, preset, bench.info(), seed, device=o.device, cache_dir=o.cache_dir,
                               progress=o.progress, log=o.log, bf16=o.bf16, sync_batchnorm=o.sync_batchnorm,
                               overrides=overrides, view_inputs=bench.view_inputs(), weights_dir=o.weights_dir,
                               test_scorer=lambda transform: base_test_scorer(bench, transform, o))
        return self.host.config

    @property
    def has_embed(self) -> bool:
        return self.host is not None and self.host.has_embed

    def fit(self, session: Session, deadline: float | None) -> None:
        self.host.fit(session)

    def evaluate(self, t: int, images: np.ndarray, rows: np.ndarray, transform: BatchTransform, batch_size: int,
                 deadline: float | None) -> HostEvaluation:
        return self.host.evaluate(images, rows, transform, batch_size, desc=f"eval {t}")

    def memory(self) -> dict[str, Any]:
        return self.host.memory() if self.host is not None else {"declared": False}

    def peak_memory(self) -> dict[str, Any] | None:
        return self.host.peak_memory() if self.host is not None else None

    @property
    def extra(self) -> dict[str, Any]:
        return self.host.extra if self.host is not None else {}

    def close(self) -> None:
        pass

    def kill(self) -> None:
        pass


def write_images(path: Path, images: np.ndarray, rows: np.ndarray | None = None) -> dict[str, Any]:
    """Write ``images`` (or its ``rows``, in that order) to ``path`` as raw uint8, a chunk at a
    time; returns the file's description for the worker."""
    n = len(images) if rows is None else len(rows)
    shape = (n, *images.shape[1:])
    with open(path, "wb") as f:
        for start in range(0, n, WRITE_CHUNK):
            stop = min(n, start + WRITE_CHUNK)
            block = images[start:stop] if rows is None else images[rows[start:stop]]
            f.write(np.ascontiguousarray(block, dtype=np.uint8).tobytes())
    return {"file": str(path), "shape": list(shape)}


class WorkerHost:
    """A method in a worker of ``pool`` (isolation ``process`` or ``sandbox``)."""

    def __init__(self, pool: WorkerPool, ref: MethodRef, options: Any, limits: Limits):
        self.pool, self.ref, self.options, self.limits = pool, ref, options, limits
        self.level = pool.level
        self.worker: WorkerConnection | None = None
        self.has_embed = False
        self._memory: dict[str, Any] = {"declared": False}
        self._peak_memory: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}
        self._num_seen = 0

    def _log_mode(self) -> str:
        from fscil_bench.run.progress import log

        return "local" if self.options.log is log else "forward"

    def _call(self, what: str, header: dict[str, Any], arrays: dict[str, np.ndarray] | None, deadline: float | None,
              max_bytes: int = 1 << 26) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        assert self.worker is not None
        try:
            reply, out = self.worker.request(header, arrays, deadline, on_log=self.options.log, max_bytes=max_bytes)
        except wire.Timeout:
            self.worker.kill()
            raise WorkerFailure("TimeLimitExceeded", f"{what} ran past the {self._limit_text(what)}; the worker was stopped") from None
        except wire.Closed:
            reason = self.worker.death()
            self.worker.kill()
            raise WorkerFailure("WorkerDied", f"the worker died during {what} ({reason})") from None
        except wire.WireError as exc:
            self.worker.kill()
            raise WorkerFailure("ProtocolError", f"the worker broke the message format during {what}: {exc}") from None
        if isinstance(reply.get("extra"), dict):
            self.extra = reply["extra"]
        if isinstance(reply.get("memory"), dict):
            self._memory = reply["memory"]
        if isinstance(reply.get("peak_memory"), dict):
            self._peak_memory = reply["peak_memory"]
        if "error" in reply:
            entry = reply["error"] if isinstance(reply["error"], dict) else {"message": str(reply["error"])}
            raise RemoteError(self._with_limit_hint(entry))
        return reply, out

    def _limit_text(self, what: str) -> str:
        if what.startswith("loading"):
            return f"load time limit of {self.limits.load_seconds:g} s"
        return f"session time limit of {self.limits.session_seconds:g} s"

    def _with_limit_hint(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Name the memory limit in an out-of-memory error raised under it."""
        text = f"{entry.get('type')}: {entry.get('message')}"
        if self.limits.memory_bytes is not None and ("MemoryError" in text or "can't allocate memory" in text):
            entry = {**entry, "message": f"{entry.get('message') or 'out of memory'} ({self.limits.describe_memory()})"}
        return entry

    def load(self, preset: str, bench: Benchmark, seed: int, seconds: float | None,
             env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        import torch

        o = self.options
        self.worker = self.pool.start("run", self.limits.memory_bytes, env)
        deadline = None if seconds is None else time.monotonic() + seconds  # from the fork: the spawner's start is ours
        pickled = np.frombuffer(pickle.dumps((bench.train_transform, bench.eval_transform)), dtype=np.uint8)
        info = bench.info()
        weights_dir = Path(o.weights_dir).resolve() if o.weights_dir is not None else None
        request = {"op": "load", "ref": self.ref.to_json(), "preset": preset, "overrides": dict(overrides or {}),
                   "view_inputs": view_inputs_to_json(bench.view_inputs()), "weights_dir": weights_dir and str(weights_dir),
                   "info": info.__dict__, "seed": seed,
                   "device": str(o.device), "cache_dir": str(Path(o.cache_dir).resolve()), "bf16": o.bf16,
                   "sync_batchnorm": o.sync_batchnorm, "threads": torch.get_num_threads(),
                   "progress": o.progress is not no_progress, "log": self._log_mode()}
        reply, _ = self._call("loading the method", request, {"pickled": pickled}, deadline)
        self.has_embed = bool(reply.get("has_embed"))
        config = reply.get("config")
        return config if isinstance(config, dict) else {"preset": preset, "overrides": dict(overrides or {})}

    def fit(self, session: Session, deadline: float | None) -> None:
        assert self.worker is not None
        path = self.worker.inbox / f"train-{session.index}.u8"
        images = write_images(path, session.train.raw_images.numpy())
        what = "fit_base" if session.is_base else "fit_session"
        try:
            self._call(what, {"op": "fit", "t": session.index, "new_classes": list(session.new_classes),
                              "num_seen": session.num_seen, "shots": session.shots, "images": images},
                       {"labels": session.train.labels.numpy().astype(np.int64)}, deadline)
        finally:
            path.unlink(missing_ok=True)
        self._num_seen = session.num_seen

    def evaluate(self, t: int, images: np.ndarray, rows: np.ndarray, transform: BatchTransform, batch_size: int,
                 deadline: float | None) -> HostEvaluation:
        assert self.worker is not None
        path = self.worker.inbox / f"test-{t}.u8"
        spec = write_images(path, images, rows)
        n = len(rows)
        pickled = np.frombuffer(pickle.dumps(transform), dtype=np.uint8)
        try:
            reply, out = self._call("evaluation", {"op": "evaluate", "t": t, "images": spec, "batch_size": batch_size,
                                                   "desc": f"eval {t}"}, {"pickled": pickled}, deadline,
                                    max_bytes=(1 << 26) + n * ANSWER_BYTES_PER_IMAGE)
        finally:
            path.unlink(missing_ok=True)
        return self._checked(reply, out, n)

    def _checked(self, reply: dict[str, Any], out: dict[str, np.ndarray], n: int) -> HostEvaluation:
        preds = out.get("preds")
        if preds is None or preds.shape != (n,) or preds.dtype.kind not in "iu":
            raise WorkerFailure("ProtocolError", f"the worker answered {n} images with predictions of shape "
                                f"{None if preds is None else preds.shape}")
        if n and (preds.min() < 0 or preds.max() >= self._num_seen):
            raise WorkerFailure("ProtocolError", f"the worker predicted classes outside 0..{self._num_seen - 1}")
        features, weights = out.get("features"), out.get("weights")
        feature_error = reply.get("feature_error")
        if features is not None and (features.ndim != 2 or len(features) != n):
            features, feature_error = None, f"features of shape {features.shape} for {n} images"
        return HostEvaluation(preds.astype(np.int16), features, None if feature_error is None else str(feature_error),
                              weights, None if reply.get("weights_error") is None else str(reply["weights_error"]))

    def memory(self) -> dict[str, Any]:
        return self._memory

    def peak_memory(self) -> dict[str, Any] | None:
        """The worker's peak memory, as its last answer gave it."""
        return self._peak_memory

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def kill(self) -> None:
        if self.worker is not None:
            self.worker.kill()


def open_host(method: Any, options: Any, limits: Limits, pool: WorkerPool | None) -> LocalHost | WorkerHost:
    """The host of ``method`` (a class or a :class:`~fscil_bench.run.catalog.MethodInfo`/ref):
    in this process without a pool, in a worker of ``pool`` otherwise."""
    ref = getattr(method, "ref", method)
    if pool is None:
        return LocalHost(ref.load() if isinstance(ref, MethodRef) else method, options)
    return WorkerHost(pool, ref if isinstance(ref, MethodRef) else MethodRef.of_class(method), options, limits)

