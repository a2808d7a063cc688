"""Library defaults that every entry point shares (the command line, the Python API, the executors)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the folder that holds the real datasets.
DATA_ROOT_ENV = "FSCIL_DATA_ROOT"

#: Environment variable naming the cache folder (datasets, base models, features).
CACHE_ENV = "FSCIL_BENCH_CACHE"

#: Test images per forward pass in evaluation (see the performance notes for how it was chosen).
EVAL_BATCH_SIZE = 256


def default_cache_dir() -> Path:
    """``$FSCIL_BENCH_CACHE``, else ``$XDG_CACHE_HOME/fscil-bench``, else ``~/.cache/fscil-bench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fscil-bench"

