"""Limits on a method's worker process: wall time per session, time to load, memory.

A worker that passes a limit is stopped and its run recorded as failed, with the session and the
limit named; the rest of the grid goes on. The defaults depend on the preset: ``smoke`` runs take
seconds, ``quick`` runs minutes on a CPU, ``paper`` runs train the published recipes (hours on
a GPU). A preset this table does not name gets the ``paper`` limits, the most generous.

The memory limit is ``RLIMIT_DATA`` (the worker's writable private memory: heap and anonymous
mappings; not its mapped files, not GPU memory): an allocation past it fails inside the worker
(``MemoryError``, or torch's "can't allocate memory"). ``RLIMIT_AS`` would be the obvious
choice, but it counts address space that torch and CUDA reserve without using, and fails their
import.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

GIB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """What one worker may use.

    Attributes:
        session_seconds: wall time of one session (``fit_base``/``fit_session`` and the
            evaluation after it).
        load_seconds: wall time to start the worker and import the method.
        memory_bytes: the worker's ``RLIMIT_DATA``; ``None`` for no limit.
    """

    session_seconds: float
    load_seconds: float
    memory_bytes: int | None

    def describe_memory(self) -> str:
        return "no memory limit" if self.memory_bytes is None else f"memory limit {self.memory_bytes / GIB:g} GiB per worker"

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


#: Default limits by preset name (why these values: see the module docstring).
PRESET_LIMITS: dict[str, Limits] = {
    "smoke": Limits(session_seconds=600, load_seconds=120, memory_bytes=8 * GIB),
    "quick": Limits(session_seconds=4 * 3600, load_seconds=300, memory_bytes=32 * GIB),
    "paper": Limits(session_seconds=72 * 3600, load_seconds=600, memory_bytes=256 * GIB),
}


def default_limits(preset: str) -> Limits:
    """The limits of ``preset`` (the ``paper`` ones for a preset the table does not name), the
    memory limit capped at three quarters of this machine's memory (past that, the kernel's
    out-of-memory killer would act before the limit)."""
    limits = PRESET_LIMITS.get(preset, PRESET_LIMITS["paper"])
    machine = physical_memory()
    if limits.memory_bytes is not None and machine:
        limits = Limits(limits.session_seconds, limits.load_seconds, min(limits.memory_bytes, machine * 3 // 4))
    return limits


def physical_memory() -> int | None:
    """This machine's memory in bytes (``None`` where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def with_overrides(limits: Limits, session_seconds: float | None = None, load_seconds: float | None = None,
                   memory_gb: float | None = None) -> Limits:
    """``limits`` with the values given (``memory_gb`` 0 removes the memory limit)."""
    memory = limits.memory_bytes if memory_gb is None else (int(memory_gb * GIB) if memory_gb > 0 else None)
    return Limits(limits.session_seconds if session_seconds is None else float(session_seconds),
                  limits.load_seconds if load_seconds is None else float(load_seconds), memory)


def apply_memory_limit(memory_bytes: int | None) -> None:
    """Set this process's ``RLIMIT_DATA`` (soft and hard) to ``memory_bytes``; no-op for ``None``."""
    if memory_bytes is None:
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    value = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (value, value))
