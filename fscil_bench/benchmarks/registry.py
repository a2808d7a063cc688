"""Every benchmark of this release by name: the built-in ones, the real datasets, and custom
benchmarks described by a YAML file (looked up by path).

A benchmark id is ``name@version``; :func:`get_benchmark` takes either form and refuses a
version this release does not have.
"""

from __future__ import annotations

from pathlib import Path

from fscil_bench.benchmarks.benchmark import BenchmarkError, BenchmarkSpec
from fscil_bench.benchmarks.builtin import glyph_specs
from fscil_bench.benchmarks.real import real_specs
from fscil_bench.registry import Registry, UnknownName

BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")
for _spec in glyph_specs() + real_specs():
    BENCHMARKS.add(_spec.name, _spec)


def benchmark_names() -> list[str]:
    """Registered benchmark names, built-in first."""
    return BENCHMARKS.names()


def get_benchmark(name: str) -> BenchmarkSpec:
    """Look up a benchmark by ``name``, ``name@version`` or the path of a custom ``.yaml`` file."""
    if name.lower().endswith((".yaml", ".yml")):
        from fscil_bench.benchmarks.custom import custom_benchmark_spec

        return custom_benchmark_spec(Path(name))
    base, _, version = name.partition("@")
    try:
        spec = BENCHMARKS.get(base)
    except UnknownName as exc:
        raise BenchmarkError(str(exc).replace(f"{base!r}", f"{name!r}", 1)) from None
    if version and version != str(spec.version):
        raise BenchmarkError(f"benchmark {base!r} is at version {spec.version} in this release, not {version}")
    return spec
