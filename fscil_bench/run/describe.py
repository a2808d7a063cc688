"""What a grid's presets resolve to, answered by the methods' own code without the runner importing it.

Checking ``--set`` overrides, naming a run (``quick+<digest>``), checking its pretrained weights
and planning a dry run's base models all need a method's class: its presets' definitions, its
``views`` and its ``base_model_recipes``. Under isolation the runner never imports method code,
so a :class:`Describer` asks a short-lived ``describe`` worker of the grid's pool (see
:func:`serve_describe`), which imports the classes by their
:class:`~fscil_bench.run.catalog.MethodRef` and answers in plain JSON:

* ``resolve``: for every (family, method, preset) the preset's name, its canonical overrides,
  its hyperparameters (:func:`~fscil_bench.protocol.hparams_to_dict`) and the pretrained weights
  it names; or the one-line :class:`~fscil_bench.run.overrides.PresetError` text.
* ``base_models``: for one run, the identity of the method's views and its
  ``base_model_recipes`` (or why they are unknown).

Without a pool (isolation ``none``) the same functions run in this process on the classes.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fscil_bench.benchmarks.benchmark import Benchmark
from fscil_bench.protocol import BenchmarkInfo, Context, hparams_to_dict
from fscil_bench.run import wire
from fscil_bench.run.catalog import MethodRef
from fscil_bench.run.host import view_inputs_from_json, view_inputs_to_json, views_of
from fscil_bench.run.overrides import Override, PresetError, ResolvedPreset, resolve, resolve_grid

#: Seconds a describe worker has to import the methods and answer, when no load limit is given.
DESCRIBE_SECONDS = 300.0


@dataclass(frozen=True)
class DescribedPreset(ResolvedPreset):
    """A :class:`ResolvedPreset` as a method's worker described it: ``hparams`` is plain data,
    and ``pretrained`` the pretrained weights the preset names (None: none)."""

    pretrained: str | None = None


@dataclass(frozen=True)
class BaseModelsAnswer:
    """A run's view identity and base-model recipes (None when unknown: ``note`` says why)."""

    views: dict[str, str] | None
    recipes: list[dict[str, Any]] | None
    note: str = ""


def weights_reference(chosen: ResolvedPreset) -> str | None:
    """The pretrained weights a resolved preset names (its ``pretrained`` field), if any."""
    if isinstance(chosen, DescribedPreset):
        return chosen.pretrained
    return getattr(chosen.hparams, "pretrained", None)


# --- the method's side (a describe worker, or this process with isolation none) ------------------


def resolve_answer(method_classes: Mapping[str, type], presets: Sequence[str], families: Iterable[str],
                   overrides: Sequence[Override]) -> dict[str, Any]:
    """:func:`~fscil_bench.run.overrides.resolve_grid` as JSON (``{"error": text}`` on a PresetError)."""
    try:
        resolved = resolve_grid(method_classes, presets, families, overrides)
    except PresetError as exc:
        return {"error": str(exc)}
    return {"resolved": [{"family": f, "method": m, "preset": p, "name": r.name, "overrides": _json(r.overrides),
                          "hparams": None if r.hparams is None else _json(hparams_to_dict(r.hparams)),
                          "pretrained": _text(getattr(r.hparams, "pretrained", None))}
                         for (f, m, p), r in resolved.items()]}


def base_models_answer(method_cls: type, preset: str, overrides: Mapping[str, Any], info: BenchmarkInfo,
                       view_inputs: Any, seed: int, cache_dir: Path) -> dict[str, Any]:
    """The views identity and ``base_model_recipes`` of one run, as JSON."""
    try:
        hparams = resolve(method_cls, preset, info.family, overrides).hparams
        views = views_of(method_cls, hparams, view_inputs).identity
    except Exception as exc:  # the run itself would fail the same way when it loads
        return {"views": None, "note": f"base models unknown: {type(exc).__name__}: {exc}"}
    ctx = Context.create(info, hparams, seed, cache_dir=cache_dir, log=lambda msg: None, views=views)
    try:
        declare = getattr(method_cls(), "base_model_recipes", None)
        recipes = declare(ctx) if declare is not None else None
    except Exception as exc:  # the run itself would fail the same way in its base session
        return {"views": views, "note": f"base models unknown: {type(exc).__name__}: {exc}"}
    if recipes is None:
        return {"views": views, "note": "base models not declared by the method"}
    return {"views": views, "recipes": _json(list(recipes))}


def serve_describe(sock: socket.socket) -> int:
    """The describe worker: answer ``resolve`` and ``base_models`` requests until ``exit``."""
    classes: dict[str, type] = {}

    def load(ref: Any) -> type:
        method_ref = MethodRef.from_json(ref)
        if method_ref not in classes:
            classes[method_ref] = method_ref.load()
        return classes[method_ref]

    while True:
        try:
            request, _ = wire.receive(sock)
        except wire.Closed:
            return 0
        try:
            if request.get("op") == "resolve":
                found = {str(m): load(ref) for m, ref in (request.get("refs") or {}).items()}
                answer = resolve_answer(found, list(request["presets"]), list(request["families"]),
                                        [Override(str(k), v, m) for k, v, m in request.get("overrides") or []])
            elif request.get("op") == "base_models":
                answer = base_models_answer(load(request["ref"]), str(request["preset"]), dict(request["overrides"]),
                                            BenchmarkInfo(**request["info"]), view_inputs_from_json(request["view_inputs"]),
                                            int(request["seed"]), Path(request["cache_dir"]))
            else:
                return 0
        except Exception as exc:  # importing a class that fails now: the runs record it themselves
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        wire.send(sock, _json(answer))


# --- the runner's side ---------------------------------------------------------------------------


class Describer:
    """Asks the methods of a grid what their presets resolve to: in a describe worker of ``pool``
    (started on first use, closed by :meth:`close`), or in this process without a pool.

    ``methods`` maps each method's name to what the grid knows of it: a class, or a
    :class:`~fscil_bench.run.catalog.MethodInfo` / :class:`~fscil_bench.run.catalog.MethodRef`;
    ``pool`` is the grid's :class:`~fscil_bench.run.workers.WorkerPool` (not imported here: the
    workers' own modules import this one)."""

    def __init__(self, methods: Mapping[str, Any], pool: Any, seconds: float | None = None,
                 memory_bytes: int | None = None):
        self.methods, self.pool = dict(methods), pool
        self.seconds, self.memory_bytes = seconds or DESCRIBE_SECONDS, memory_bytes
        self._worker = None

    def __enter__(self) -> Describer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _class(self, method: str) -> type:
        ref = getattr(self.methods[method], "ref", self.methods[method])
        return ref.load() if isinstance(ref, MethodRef) else ref

    def _ref(self, method: str) -> dict[str, str]:
        ref = getattr(self.methods[method], "ref", self.methods[method])
        return (ref if isinstance(ref, MethodRef) else MethodRef.of_class(ref)).to_json()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.pool is not None
        if self._worker is None or self._worker.closed:
            self._worker = self.pool.start("describe", self.memory_bytes)
        try:
            reply, _ = self._worker.request(_json(request), deadline=time.monotonic() + self.seconds)
        except wire.WireError as exc:
            why = "did not answer in time" if isinstance(exc, wire.Timeout) else f"failed ({self._worker.death()})"
            self._worker.kill()
            raise PresetError(f"the methods' presets could not be read: the describing worker {why}") from None
        return reply

    def resolve(self, methods: Sequence[str], presets: Sequence[str], families: Iterable[str],
                overrides: Sequence[Override] = ()) -> dict[tuple[str, str, str], ResolvedPreset]:
        """``(family, method, preset) -> ResolvedPreset`` of a grid, as
        :func:`~fscil_bench.run.overrides.resolve_grid` gives it; raises its :class:`PresetError`."""
        families = list(dict.fromkeys(families))
        if self.pool is None:
            return resolve_grid({m: self._class(m) for m in methods}, presets, families, overrides)
        reply = self._ask({"op": "resolve", "refs": {m: self._ref(m) for m in methods}, "presets": list(presets),
                           "families": families, "overrides": [[o.key, o.value, o.method] for o in overrides]})
        if "error" in reply:
            raise PresetError(str(reply["error"]))
        return {(e["family"], e["method"], e["preset"]): DescribedPreset(str(e["name"]), e["hparams"], dict(e["overrides"]),
                                                                         e.get("pretrained"))
                for e in reply.get("resolved") or []}

    def base_models(self, method: str, chosen: ResolvedPreset, bench: Benchmark, seed: int,
                    cache_dir: Path) -> BaseModelsAnswer:
        """The views identity and base-model recipes of the run of ``method`` with ``chosen``."""
        info = bench.info()
        if self.pool is None:
            reply = base_models_answer(self._class(method), chosen.name, chosen.overrides, info, bench.view_inputs(),
                                       seed, cache_dir)
        else:
            reply = self._ask({"op": "base_models", "ref": self._ref(method), "preset": chosen.name,
                               "overrides": chosen.overrides, "info": info.__dict__,
                               "view_inputs": view_inputs_to_json(bench.view_inputs()), "seed": seed,
                               "cache_dir": str(Path(cache_dir).resolve())})
            if "error" in reply:
                return BaseModelsAnswer(None, None, f"base models unknown: {reply['error']}")
        return BaseModelsAnswer(reply.get("views"), reply.get("recipes"), str(reply.get("note") or ""))


def _json(value: Any) -> Any:
    """``value`` as JSON would hold it (objects JSON cannot hold become their ``str``)."""
    return json.loads(json.dumps(value, default=str))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
