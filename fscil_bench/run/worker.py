"""A method's worker process: the method side of one run, or of method discovery.

A worker is forked by the spawner (:mod:`fscil_bench.run.spawner`) and talks to the runner over
one socket (:mod:`fscil_bench.run.wire`). It holds only what the runner sends it.

A run worker answers, in this order:

* ``load``: import the method class its :class:`~fscil_bench.run.catalog.MethodRef` names,
  resolve the preset with the run's canonical overrides and the method's own views (from the
  benchmark's :class:`~fscil_bench.data.views.ViewInputs`, sent as data), and build the
  :class:`~fscil_bench.run.host.MethodHost`; answer the config.
* ``fit``: one session, its training samples read from a file the runner wrote (a copy in the
  worker's memory) and their labels in the message.
* ``evaluate``: the unlabelled test images, memory-mapped from a file the runner wrote in the
  hidden order, and the test-time transform to apply; answer the predicted classes, the
  ``embed`` features and the classifier weights.
* ``exit``.

Every answer carries the method's ``ctx.extra``, ``memory()`` and peak memory so far; an exception in the
method is answered as ``{"error": {type, message, traceback}}``. Log lines are forwarded to the
runner (``{"log": text}``) or printed here, as the runner asks.

A describe worker (:func:`fscil_bench.run.describe.serve_describe`) answers what a grid's presets
resolve to, from the method classes its references name.

A discovery worker imports the methods (built-in modules, entry points, plugin files), one step
at a time, and describes each class it finds as JSON, so the runner learns the names, presets and
attributes of every method without importing any of them.
"""

from __future__ import annotations

import json
import pickle
import socket
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from fscil_bench.run import wire


def error_entry(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}


def json_safe(value: Any) -> Any:
    """``value`` as JSON would hold it (objects JSON cannot hold become their ``str``)."""
    return json.loads(json.dumps(value, default=str))


def read_images(spec: dict[str, Any], copy: bool) -> np.ndarray:
    """The uint8 ``(N, H, W, 3)`` images of a file the runner wrote: memory-mapped, or a copy."""
    shape = tuple(int(d) for d in spec["shape"])
    if shape[0] == 0:
        return np.zeros(shape, np.uint8)
    images = np.memmap(spec["file"], dtype=np.uint8, mode="r", shape=shape)
    return np.array(images) if copy else images


class Copies:
    """A read-only memory-mapped array whose slices are private copies (writable, so torch can
    take them without a warning, and nothing can write through them into the map)."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape = array, array.shape

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(self.array[index])


class RunWorker:
    """The run side of the protocol above (one method, one run)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.host: Any = None
        self.transforms: tuple[Any, Any] | None = None

    def send(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        if self.host is not None:
            header = {**header, "extra": json_safe(self.host.extra), "memory": json_safe(self.host.memory()),
                      "peak_memory": json_safe(self.host.peak_memory())}
        wire.send(self.sock, header, arrays)

    def forward_log(self, message: str) -> None:
        wire.send(self.sock, {"log": str(message)[:4000]})

    def serve(self) -> int:
        from fscil_bench import distributed

        try:
            self._serve()
        finally:
            distributed.shutdown()
        return 0

    def _serve(self) -> None:
        while True:
            try:
                request, arrays = wire.receive(self.sock)
            except wire.Closed:
                return
            op = request.get("op")
            if op == "exit":
                return
            try:
                handler = {"load": self.load, "fit": self.fit, "evaluate": self.evaluate}[op]
                header, out = handler(request, arrays)
            except Exception as exc:
                header, out = {"error": error_entry(exc)}, None
            self.send(header, out)

    def load(self, request: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict, None]:
        import torch

        from fscil_bench import distributed
        from fscil_bench.protocol import BenchmarkInfo, no_progress
        from fscil_bench.run.catalog import MethodRef
        from fscil_bench.run.host import MethodHost, view_inputs_from_json
        from fscil_bench.run.progress import log, tqdm_progress

        if request.get("threads"):
            torch.set_num_threads(int(request["threads"]))
        self.transforms = pickle.loads(arrays["pickled"].tobytes())
        device = distributed.init_from_env(torch.device(request["device"]))
        log_to = {"local": log, "forward": self.forward_log}.get(request.get("log"), lambda msg: None)
        method_cls = MethodRef.from_json(request["ref"]).load()
        self.host = MethodHost(method_cls, request["preset"], BenchmarkInfo(**request["info"]), int(request["seed"]),
                               device=device, cache_dir=Path(request["cache_dir"]),
                               progress=tqdm_progress if request.get("progress") else no_progress, log=log_to,
                               bf16=bool(request.get("bf16")), sync_batchnorm=bool(request.get("sync_batchnorm")),
                               overrides=dict(request.get("overrides") or {}),
                               view_inputs=view_inputs_from_json(request["view_inputs"]),
                               weights_dir=Path(request["weights_dir"]) if request.get("weights_dir") else None)
        return {"ok": True, "config": json_safe(self.host.config), "has_embed": self.host.has_embed}, None

    def fit(self, request: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict, None]:
        from fscil_bench.data.arrays import ImageArray, LabelledImages
        from fscil_bench.protocol import Session

        train_transform, eval_transform = self.transforms
        images = read_images(request["images"], copy=True)
        train = LabelledImages(ImageArray(images, np.array(arrays["labels"], dtype=np.int64)), train_transform, eval_transform)
        shots = request.get("shots")
        self.host.fit(Session(index=int(request["t"]), new_classes=tuple(int(c) for c in request["new_classes"]),
                              num_seen=int(request["num_seen"]), shots=None if shots is None else int(shots), train=train))
        return {"ok": True}, None

    def evaluate(self, request: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
        transform = pickle.loads(arrays["pickled"].tobytes())  # the runner's choice, as in-process
        images = Copies(read_images(request["images"], copy=False))
        result = self.host.evaluate(images, None, transform, int(request["batch_size"]), str(request.get("desc", "")))
        out = {"preds": result.preds}
        if result.features is not None:
            out["features"] = result.features
        if result.weights is not None:
            out["weights"] = result.weights
        return {"ok": True, "feature_error": result.feature_error, "weights_error": result.weights_error}, out


def discover_steps(sock: socket.socket) -> int:
    """The discovery side: load the steps asked for (minus ``skip``), answering after each."""
    from fscil_bench.run.catalog import MethodInfo
    from fscil_bench.run.methods import MethodRegistry, discovery_steps, run_discovery_step

    request, _ = wire.receive(sock)
    skip = set(request.get("skip") or [])
    steps = [s for s in discovery_steps(list(request.get("plugins") or [])) if s not in skip]
    wire.send(sock, {"plan": steps})
    registry = MethodRegistry()
    for step in steps:
        before, errors_before = set(registry.names()), dict(registry.errors)
        try:
            run_discovery_step(step, registry)
        except Exception as exc:  # a step that breaks discovery itself is that step's error
            registry.errors[step.partition(":")[2]] = f"{type(exc).__name__}: {exc}"
        methods, errors = [], {k: v for k, v in registry.errors.items() if errors_before.get(k) != v}
        for name in sorted(set(registry.names()) - before):
            try:
                methods.append(MethodInfo.of_class(registry.get(name), registry.source(name)).to_json())
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        wire.send(sock, {"step": step, "methods": methods, "errors": errors})
    wire.send(sock, {"done": True})
    return 0


def serve(sock: socket.socket, role: str) -> int:
    """Run the worker of ``role`` ("run", "discover" or "describe") on ``sock``; returns the exit status."""
    if role == "discover":
        return discover_steps(sock)
    if role == "describe":
        from fscil_bench.run.describe import serve_describe

        return serve_describe(sock)
    return RunWorker(sock).serve()
