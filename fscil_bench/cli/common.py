"""What every ``fscil-bench`` command shares: one-line user errors and argument helpers."""

from __future__ import annotations

import shlex
import sys


class UserError(Exception):
    """A problem with the command's input, reported as one line (``error: ...``, exit status 2)."""


def split_names(values: list[str] | None) -> list[str]:
    """Names given as repeated and/or comma-separated options, in order."""
    return [n for v in values or [] for n in v.split(",") if n]


def parse_device(name: str):
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``... as a ``torch.device``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but no CUDA GPU is available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}: {exc}") from exc


def command_line() -> str:
    """This process's command, as a record or report names it."""
    return "fscil-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
