"""Progress bars (tqdm) on a terminal, periodic log lines elsewhere, and log lines that do not
break the bars."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

#: Seconds between two progress lines when output is not a terminal (CI logs, ``nohup``).
HEARTBEAT_SECONDS = 30.0


def tqdm_progress(iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterator[T]:
    """A progress bar on stderr when it is a terminal; otherwise a line on stdout every
    ``HEARTBEAT_SECONDS`` for long loops, so a redirected log still shows that work goes on."""
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr)
    return _heartbeat(iterable, desc, total)


def _heartbeat(iterable: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    start = last = time.monotonic()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= HEARTBEAT_SECONDS:
            last = now
            of = f"/{total}" if total else ""
            log(f"  {desc}: {done}{of} done, {now - start:.0f}s")


def log(message: str) -> None:
    """Print ``message`` above any progress bar, flushed at once (stdout is block-buffered when
    redirected to a file)."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()
