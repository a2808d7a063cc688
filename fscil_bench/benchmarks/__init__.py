"""Benchmarks: a schedule with its images and transforms under a versioned name, and their registry.

``get_benchmark``, ``benchmark_names``, ``Benchmark``, ``BenchmarkSpec``, ``BenchmarkError`` and
``LoadOptions`` are available from this package (imported on first use).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Benchmark": "fscil_bench.benchmarks.benchmark",
    "BenchmarkError": "fscil_bench.benchmarks.benchmark",
    "BenchmarkSpec": "fscil_bench.benchmarks.benchmark",
    "LoadOptions": "fscil_bench.benchmarks.benchmark",
    "benchmark_names": "fscil_bench.benchmarks.registry",
    "get_benchmark": "fscil_bench.benchmarks.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
