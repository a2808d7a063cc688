"""Metrics: pure functions over saved predictions (:mod:`~fscil_bench.metrics.fscil`), the
neural-collapse diagnostics of features (:mod:`~fscil_bench.metrics.collapse`), and the one
table of metric descriptors that records, leaderboards and their definitions are generated from
(:mod:`~fscil_bench.metrics.descriptors`)."""

from fscil_bench.metrics.collapse import *  # noqa: F401,F403
from fscil_bench.metrics.collapse import __all__ as _collapse_all
from fscil_bench.metrics.descriptors import (
                                                     METRICS,
                                                     MetricDescriptor,
                                                     RunOutputs,
                                                     compute_metrics,
                                                     summarize,
)
from fscil_bench.metrics.fscil import *  # noqa: F401,F403
from fscil_bench.metrics.fscil import __all__ as _fscil_all

__all__ = list(_fscil_all) + list(_collapse_all) + ["METRICS", "MetricDescriptor", "RunOutputs", "compute_metrics",
                                                     "summarize"]
