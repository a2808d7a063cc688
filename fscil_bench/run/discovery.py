"""Method discovery without importing method code into the runner.

:func:`discover_methods` asks a discovery worker (:func:`fscil_bench.run.worker.discover_steps`)
to import the built-in modules, the entry points and the plugin files one step at a time, and
builds a :class:`~fscil_bench.run.catalog.MethodCatalog` from the JSON it answers. A step that
does not finish within the load time limit, or kills the worker, becomes that source's error
("did not finish importing within 30 s"), and a fresh worker goes on with the steps after it:
one plugin that hangs on import costs its own methods, never the others'. Without a pool
(isolation ``none``) discovery happens in this process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fscil_bench.run import wire
from fscil_bench.run.catalog import MethodCatalog, MethodInfo
from fscil_bench.run.methods import discover
from fscil_bench.run.workers import WorkerPool


def step_source(step: str) -> str:
    """The key a step's errors are listed under: the module, entry-point name or plugin path."""
    return step.partition(":")[2]


def _step_failure(step: str, what: str) -> str:
    kind, source = step.partition(":")[0], step_source(step)
    if kind == "plugin":
        return f"plugin file {source} {what}"
    return what


def discover_methods(plugin_files: Sequence[str | Path], pool: WorkerPool | None, load_seconds: float,
                     memory_bytes: int | None = None) -> MethodCatalog:
    """The methods of the built-in package, the installed entry points and ``plugin_files``."""
    if pool is None:
        return MethodCatalog.of_registry(discover([str(p) for p in plugin_files]))
    plugins = [str(Path(p).resolve()) for p in plugin_files]  # a worker starts in its own folder
    catalog, skip = MethodCatalog(), []
    while True:
        worker = pool.start("discover", memory_bytes)
        pending: list[str] | None = None
        try:
            reply, _ = worker.request({"op": "discover", "plugins": plugins, "skip": skip},
                                      deadline=wire_deadline(load_seconds))
            pending = [str(s) for s in reply.get("plan") or []]
            while pending:
                reply, _ = worker.answer(wire_deadline(load_seconds))
                step = str(reply.get("step"))
                for data in reply.get("methods") or []:
                    try:
                        catalog.add(MethodInfo.from_json(data))
                    except ValueError as exc:
                        catalog.errors[step_source(step)] = f"unreadable method description: {exc}"
                for source, message in (reply.get("errors") or {}).items():
                    catalog.errors[str(source)] = str(message)
                if step in pending:
                    pending.remove(step)
            worker.close()
            return catalog
        except wire.WireError as exc:
            if not pending:  # the worker failed before (or after) every step: nothing to skip
                worker.kill()
                raise
            step = pending[0]
            if isinstance(exc, wire.Timeout):
                why = f"did not finish importing within {load_seconds:g} s (the load time limit)"
                worker.kill()
            else:
                why = f"stopped the worker while importing ({worker.death()})"
                worker.kill()
            catalog.errors[step_source(step)] = _step_failure(step, why)
            skip.append(step)


def wire_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
