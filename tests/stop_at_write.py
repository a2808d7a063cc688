"""Run the fscil-bench command line and stop for good at one chosen file write, to be killed there.

Usage: ``python stop_at_write.py PATTERN FD fscil-bench-args...``. Every file the project writes
safely is written under a temporary name and renamed into place with ``os.replace``; the first
rename whose target's file name matches the glob ``PATTERN`` is not carried out: this process
writes the target's path and a newline to the file descriptor ``FD`` and waits forever, so the
parent kills it at exactly that point (no timing involved).
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading


def stop_at(pattern: str, fd: int) -> None:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.path.basename(os.fspath(dst)), pattern):
            os.write(fd, f"{os.fspath(dst)}\n".encode())
            threading.Event().wait()  # until killed
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace


if __name__ == "__main__":
    stop_at(sys.argv[1], int(sys.argv[2]))
    from fscil_bench.cli import main

    sys.exit(main(sys.argv[3:]))
