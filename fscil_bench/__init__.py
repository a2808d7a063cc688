"""fscil-bench: a benchmark suite for few-shot class-incremental learning.

The public API a method author needs: :class:`Session`, :class:`Context`, the :class:`Method`
protocol and its convenient base :class:`MethodBase`, and :class:`MemoryDeclaration`.
"""

__version__ = "0.1.0"

from fscil_bench.protocol import (
    BenchmarkInfo,
    Context,
    MemoryDeclaration,
    Method,
    MethodBase,
    Session,
)

__all__ = ["BenchmarkInfo", "Context", "MemoryDeclaration", "Method", "MethodBase", "Session", "__version__"]
