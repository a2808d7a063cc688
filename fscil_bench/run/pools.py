"""The worker pool a grid shares, and what its sandbox hides.

A sandboxed worker must not read the data a benchmark is built from, nor other runs' records.
:func:`hidden_paths` lists those places for a grid: the results folder, the data root, and the
data folders a benchmark names itself (a custom benchmark's ``root``). The dataset cache
(``<cache>/datasets``) is hidden by every pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fscil_bench.benchmarks.benchmark import BenchmarkSpec, LoadOptions
from fscil_bench.results.store import ResultsStore
from fscil_bench.run.catalog import MethodCatalog, MethodRef
from fscil_bench.run.methods import MethodRegistry, PluginError
from fscil_bench.run.runner import RunOptions
from fscil_bench.run.workers import WorkerPool, resolve_isolation


def hidden_paths(results: Path | None, data_root: Path | None, specs: Iterable[BenchmarkSpec]) -> list[Path]:
    """What a sandboxed worker of this grid must not read (besides the dataset cache)."""
    paths = [p for p in (results, data_root) if p is not None]
    for spec in specs:
        paths += list(getattr(spec, "data_paths", ()) or ())
    return [Path(p) for p in paths]


def plugin_files(registry: MethodCatalog | MethodRegistry) -> list[Path]:
    """The plugin files the methods of ``registry`` come from (a sandboxed worker must read them)."""
    if isinstance(registry, MethodCatalog):
        refs = [info.ref for info in registry.infos.values()]
    else:
        refs = []
        for name in registry.names():
            with contextlib.suppress(PluginError):
                refs.append(MethodRef.of_class(registry.get(name)))
    return sorted({Path(ref.file) for ref in refs if ref.file})


def make_pool(level: str, cache_dir: Path, hidden: Sequence[Path], readable: Sequence[Path]) -> WorkerPool | None:
    """A pool at ``level`` (``None`` for ``none``: methods run in the runner's process)."""
    return None if level == "none" else WorkerPool(level, cache_dir, hidden, readable)


@contextlib.contextmanager
def shared_pool(options: RunOptions, specs: Sequence[BenchmarkSpec], registry: Any, store: ResultsStore,
                load_options: LoadOptions) -> Iterator[RunOptions]:
    """``options`` with a pool the grid's runs share: theirs when they hold one, else a new one
    (closed on exit). With isolation ``none`` nothing changes."""
    if options.isolation == "none" or options.pool is not None:
        yield options
        return
    level, note = resolve_isolation(options.isolation)
    if note:
        options.log(note)
    hidden = hidden_paths(store.root, load_options.data_root, specs) + list(options.hidden_paths)
    weights = [options.weights_dir] if options.weights_dir is not None else []
    pool = make_pool(level, options.cache_dir, hidden, plugin_files(registry) + weights)
    try:
        yield replace(options, isolation=level, pool=pool)
    finally:
        if pool is not None:
            pool.close()
