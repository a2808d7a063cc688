"""Progress bars (tqdm) that stay quiet when output is not a terminal, and log lines that do
not break them."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def tqdm_progress(iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterator[T]:
    """A progress bar on stderr when it is a terminal; a plain iterator otherwise."""
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)


def log(message: str) -> None:
    tqdm.write(message, file=sys.stdout)
