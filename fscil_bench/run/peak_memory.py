"""Peak memory of a run, measured where the method runs.

:class:`PeakMemory` records the highest memory in use from its start (a context manager around
a block, or ``start``) above what was in use then; ``read`` gives the peak so far.
:class:`fscil_bench.run.host.MethodHost` measures a run from the method's load on, in the process
the method runs in (the runner's, or the method's worker):

* on a CUDA device: ``torch.cuda.max_memory_allocated`` after resetting the peak statistics at the
  start, minus the memory allocated at the start (tensors only; the caching allocator's reserve
  and the CUDA context are not counted);
* on the CPU: the growth of the process's resident set size (RSS) over its value at the start.
  First, freed heap memory is handed back to the system (``gc.collect`` and glibc's
  ``malloc_trim``), so memory that an earlier run freed but the allocator kept does not hide
  this run's use of it. On Linux the kernel's high-water mark (``VmHWM`` in
  ``/proc/self/status``) is then reset by writing ``5`` to ``/proc/self/clear_refs``, so the
  peak is that of the block alone (``kind`` ``"rss_peak"``). Where that is not possible, the
  process's lifetime peak (``ru_maxrss``) is used; it cannot tell a peak reached before the block
  from one inside it, so the figure is a lower bound (``kind`` ``"rss_lifetime_peak"``), 0 when
  an earlier peak was higher.

RSS counts every page the process touches, so pages of a memory-mapped data set read for the
first time count too. A run in a fresh process is measured best.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
import resource
import sys
from pathlib import Path
from typing import Any

import torch

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _release_free_heap() -> None:
    """Return freed memory to the system, so RSS measures memory in use (glibc only; else a no-op)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is not None:
        trim(0)


def _lifetime_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


class PeakMemory:
    """``with PeakMemory(device) as peak: ...``; then ``peak.result`` is a dict:
    ``device``, ``kind`` (how it was measured, see the module docstring), ``bytes`` (the peak
    above the start) and ``start_bytes`` (what the peak is measured from: memory allocated or
    resident at the start, or the lifetime peak for ``rss_lifetime_peak``)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.result: dict[str, Any] = {}

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self._kind = "cuda_max_allocated"
        else:
            _release_free_heap()
            rss = _status_kib("VmRSS")
            if rss is not None and _reset_rss_peak() and _status_kib("VmHWM") is not None:
                self._start, self._kind = rss * 1024, "rss_peak"
            else:
                self._start, self._kind = _lifetime_peak_bytes(), "rss_lifetime_peak"
        return self

    def start(self) -> PeakMemory:
        return self.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self.result = self.read()

    def read(self) -> dict[str, Any]:
        """The peak so far, above the start (the block may go on; ``__exit__`` keeps the last reading)."""
        if self._kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._kind == "rss_peak":
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _lifetime_peak_bytes()
        return {"device": str(self.device), "kind": self._kind, "bytes": max(0, int(peak - self._start)),
                "start_bytes": int(self._start)}
