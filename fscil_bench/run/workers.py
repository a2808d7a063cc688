"""The runner's side of method workers: isolation levels, the spawner, one worker per run.

Isolation levels (recorded in every record, shown in every report):

* ``sandbox``: each method runs in a worker process forked by a spawner that lives inside the
  bubblewrap sandbox of :mod:`fscil_bench.run.sandbox`.
* ``process``: the same workers, without the sandbox (no bwrap on this machine, or a
  data-parallel run whose workers must share the network).
* ``none``: the method runs inside the runner's own process (``--isolation none``, for
  stepping through a method in a debugger). Never the default.

:func:`resolve_isolation` turns the requested level (``auto`` by default: ``sandbox`` where the
machine allows one, else ``process``) into the level used and, where it fell back, one line
saying why. A :class:`WorkerPool` starts the spawner on first use (:mod:`fscil_bench.run.spawner`;
it pays for importing torch once) and forks one worker per run (or per method discovery), one at
a time. A worker that passes a limit is killed by the spawner, with whatever it started; a
spawner that stops answering is killed with everything in its sandbox, and the next worker
starts a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fscil_bench import distributed
from fscil_bench.defaults import DATA_ROOT_ENV
from fscil_bench.run import wire
from fscil_bench.run.sandbox import SandboxPlan, bwrap_command, find_bwrap, interpreter_paths, sandbox_problem
from fscil_bench.run.spawner import die_with_parent

LEVELS = ("sandbox", "process", "none")
REQUESTS = ("auto",) + LEVELS
#: Seconds a worker has to exit after ``exit``, and the spawner to start and to answer.
GRACE_SECONDS = 10.0
#: A pool's folder (inbox and scratch) is ``<tmp>/<prefix><pid>-<random>``.
ROOT_PREFIX = "fscil-bench-workers-"


class IsolationError(RuntimeError):
    """The requested isolation cannot be had on this machine."""


class WorkerError(RuntimeError):
    """A worker that could not start, or stopped answering (the message says how)."""


def resolve_isolation(requested: str) -> tuple[str, str | None]:
    """The isolation level to use for ``requested`` and a one-line note when it is not what
    ``auto`` would promise (``None`` otherwise). Raises :class:`IsolationError` for a level the
    machine cannot give."""
    if requested not in REQUESTS:
        raise IsolationError(f"unknown isolation {requested!r}; choose from {', '.join(REQUESTS)}")
    if requested in ("none", "process"):
        return requested, None
    if distributed.launched_by_torchrun():
        if requested == "sandbox":
            raise IsolationError("--isolation sandbox is not available to data-parallel runs (each rank's worker "
                                 "must reach the others over the network); use --isolation process")
        return "process", ("note: data-parallel run: methods run in their own processes without a sandbox "
                           "(isolation: process), since each rank's worker must reach the others over the network")
    problem = sandbox_problem(find_bwrap())
    if problem is None:
        return "sandbox", None
    if requested == "sandbox":
        raise IsolationError(f"no sandbox on this machine: {problem}")
    return "process", f"note: no sandbox on this machine ({problem}); methods run in their own processes (isolation: process)"


def _remove_stale_roots() -> None:
    """Remove the folders of pools whose process is gone (killed before it could clean up)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*-*"):
        pid = folder.name[len(ROOT_PREFIX):].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


class WorkerPool:
    """Starts method workers at one isolation level (``sandbox`` or ``process``).

    Args:
        level: ``sandbox`` or ``process``.
        cache_dir: the shared cache: workers may write its ``base_models`` and ``features``
            folders, and cannot read its ``datasets`` folder.
        hidden: more paths a sandboxed worker cannot read (data roots, the results folder).
        readable: files a sandboxed worker must read (plugin files, a weights folder; the
            cache's ``weights`` folder always is).
    """

    def __init__(self, level: str, cache_dir: Path, hidden: Sequence[Path] = (), readable: Sequence[Path] = ()):
        if level not in ("sandbox", "process"):
            raise ValueError(f"a worker pool isolates at level sandbox or process, not {level!r}")
        self.level = level
        _remove_stale_roots()
        self.root = Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-")).resolve()
        self.inbox, self.scratch = self.root / "inbox", self.root / "scratch"
        cache = Path(cache_dir).resolve()
        writable = [cache / "base_models", cache / "features", self.scratch]
        #: Cache folders made only so the sandbox can bind or hide them; removed at close when still empty.
        self._made = [p for f in (cache / "datasets", *writable[:2]) for p in (f, *f.parents) if not p.exists()]
        for folder in [self.inbox, cache / "datasets", *writable]:
            folder.mkdir(parents=True, exist_ok=True)
        hidden_paths = [cache / "datasets"] + [Path(p).resolve() for p in hidden if p]
        self.plan = SandboxPlan(hidden=tuple(hidden_paths), writable=tuple(writable),
                                readable=tuple(interpreter_paths() + [Path(p).resolve() for p in readable]
                                               + [cache / "weights", self.inbox]),
                                share_network=distributed.launched_by_torchrun())
        self.bwrap = find_bwrap() if level == "sandbox" else None
        self._proc: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._exits: dict[int, dict[str, Any]] = {}
        self._current: WorkerConnection | None = None
        self._count = 0

    # -- the spawner ---------------------------------------------------------------------------

    def _start_spawner(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [sys.executable, "-m", "fscil_bench.run.spawner", str(theirs.fileno())]
        if self.level == "sandbox":
            command = bwrap_command(self.bwrap, self.plan, command + ["--own-pid-namespace"])
        env = {k: v for k, v in os.environ.items() if k != DATA_ROOT_ENV}
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in sys.path if p and Path(p).exists())
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._proc = subprocess.Popen(command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd="/", env=env,
                                      start_new_session=True, preexec_fn=die_with_parent)
        theirs.close()
        self._control, self._exits = ours, {}
        deadline = time.monotonic() + max(GRACE_SECONDS, 120.0)
        try:
            self._control_message(deadline, want="ready")
        except WorkerError as exc:
            self.reset()
            raise WorkerError(f"the {self.level} worker spawner did not start ({exc})") from None

    def _control_message(self, deadline: float, want: str) -> dict[str, Any]:
        """The next control message holding ``want`` (exit events met on the way are kept)."""
        assert self._control is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError("no answer in time")
            self._control.settimeout(left)
            try:
                data = self._control.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as exc:
                raise WorkerError(f"spawner lost: {exc}") from None
            if not data:
                code = self._proc.wait() if self._proc is not None else None
                raise WorkerError(f"spawner exited with status {code}")
            message = json.loads(data)
            if message.get("event") == "exit":
                self._exits[int(message["pid"])] = message
            if want in message:
                return message

    def reset(self) -> None:
        """Kill the spawner and everything it started (the next worker starts a fresh one)."""
        if self._current is not None and self.level == "process":
            with contextlib.suppress(OSError):
                os.killpg(self._current.pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=GRACE_SECONDS)
        if self._control is not None:
            self._control.close()
        self._proc = self._control = self._current = None

    def close(self) -> None:
        """Stop the spawner (it exits when its control socket closes) and remove the scratch."""
        if self._current is not None:
            self._current.close()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.reset()
        self._proc = None
        shutil.rmtree(self.root, ignore_errors=True)
        for folder in sorted(set(self._made), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: something was cached there
                folder.rmdir()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers -------------------------------------------------------------------------------

    def start(self, role: str, memory_bytes: int | None = None, env: dict[str, str] | None = None) -> WorkerConnection:
        """Fork a worker of ``role`` ("run", "discover" or "describe") with its own scratch and inbox folders."""
        if self._current is not None:
            self._current.close()
        if self._proc is not None and self._proc.poll() is not None:
            self.reset()
        if self._proc is None:
            self._start_spawner()
        self._count += 1
        scratch, inbox = self.scratch / f"run-{self._count}", self.inbox / f"run-{self._count}"
        scratch.mkdir()
        inbox.mkdir()
        ours, theirs = socket.socketpair()
        request = {"op": "fork", "role": role, "memory_bytes": memory_bytes, "scratch": str(scratch),
                   "env": {"TMPDIR": str(scratch), **(env or {})}}
        try:
            socket.send_fds(self._control, [json.dumps(request).encode()], [theirs.fileno()])
            pid = int(self._control_message(time.monotonic() + GRACE_SECONDS, want="pid")["pid"])
        except (OSError, WorkerError) as exc:
            ours.close()
            self.reset()
            raise WorkerError(f"could not start a worker ({exc})") from None
        finally:
            theirs.close()
        self._current = WorkerConnection(self, ours, pid, scratch, inbox)
        return self._current

    def stop(self, pid: int) -> None:
        """Kill worker ``pid`` and what it left running; the whole spawner when it does not answer."""
        try:
            self._control.send(json.dumps({"op": "kill", "pid": pid}).encode())
        except (OSError, AttributeError):
            self.reset()
            return
        if self.exit_of(pid, wait=GRACE_SECONDS) is None:
            self.reset()

    def exit_of(self, pid: int, wait: float) -> dict[str, Any] | None:
        """The exit event of worker ``pid``, waiting up to ``wait`` seconds for it."""
        if pid not in self._exits and self._control is not None:
            with contextlib.suppress(WorkerError):
                self._control_message(time.monotonic() + wait, want="event")
                while pid not in self._exits:
                    self._control_message(time.monotonic() + wait, want="event")
        return self._exits.get(pid)


def describe_exit(event: dict[str, Any] | None) -> str:
    """How a worker ended, in words: "killed by signal SIGSEGV", "exit status 3"."""
    if not event:
        return "it ended without an exit status"
    if event.get("signal"):
        try:
            name = signal.Signals(int(event["signal"])).name
        except ValueError:
            name = str(event["signal"])
        return f"killed by signal {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exit status {event.get('code')}"


class WorkerConnection:
    """One worker: requests and answers over its socket, its scratch and inbox folders."""

    def __init__(self, pool: WorkerPool, sock: socket.socket, pid: int, scratch: Path, inbox: Path):
        self.pool, self.sock, self.pid, self.scratch, self.inbox = pool, sock, pid, scratch, inbox
        self.closed = False

    def request(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None, deadline: float | None = None,
                on_log: Callable[[str], None] | None = None, max_bytes: int = 1 << 34) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request and return its answer; log lines met on the way go to ``on_log``."""
        wire.send(self.sock, header, arrays, deadline)
        return self.answer(deadline, on_log, max_bytes)

    def answer(self, deadline: float | None, on_log: Callable[[str], None] | None = None,
               max_bytes: int = 1 << 34) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        while True:
            reply, arrays = wire.receive(self.sock, deadline, max_bytes)
            if "log" in reply and len(reply) == 1:
                if on_log is not None:
                    on_log(str(reply["log"]))
                continue
            return reply, arrays

    def death(self) -> str:
        """How the worker ended (after its socket closed)."""
        return describe_exit(self.pool.exit_of(self.pid, wait=GRACE_SECONDS))

    def kill(self) -> None:
        """Stop the worker now, with everything it started."""
        if not self.closed:
            self.closed = True
            self.pool.stop(self.pid)
            self._cleanup()

    def close(self) -> None:
        """End the worker normally; one that does not exit in time is killed."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(wire.WireError):
            wire.send(self.sock, {"op": "exit"}, deadline=time.monotonic() + GRACE_SECONDS)
        if self.pool.exit_of(self.pid, wait=GRACE_SECONDS) is None:
            self.pool.reset()
        self._cleanup()

    def _cleanup(self) -> None:
        self.sock.close()
        if self.pool._current is self:
            self.pool._current = None
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.inbox, ignore_errors=True)
