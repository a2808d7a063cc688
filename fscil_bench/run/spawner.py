"""The spawner: one process (inside the sandbox, where there is one) that forks the workers.

Importing torch takes seconds; the spawner pays that once. It imports torch and the package's
own modules (never a method's), then waits on its control socket (``SOCK_SEQPACKET``, one JSON
message per request) for ``fork`` requests, each carrying the worker's end of a fresh socket
(``SCM_RIGHTS``). The forked child starts a new session, drops its parent's sockets, sets its
memory limit, its environment and its working folder, and becomes the worker
(:func:`fscil_bench.run.worker.serve`). The spawner answers ``{"pid": ...}`` and, when a child
ends, ``{"event": "exit", "pid", "code", "signal"}``. A ``kill`` request (``{"op": "kill",
"pid"}``) kills a child that stopped answering.

When a child ends, whatever it left running is killed: in the sandbox's own process namespace
that is every process but the spawner and the namespace's init (the runner starts one run at a
time per spawner); without a sandbox, the child's process group.

Run as ``python -m fscil_bench.run.spawner CONTROL_FD [--own-pid-namespace]`` from ``/``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import traceback

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
#: Modules every worker needs, imported once here (the package's own code and its dependencies).
PRELOAD = ("torch", "numpy", "fscil_bench.protocol", "fscil_bench.data.arrays",
           "fscil_bench.data.transforms", "fscil_bench.toolkit.training", "fscil_bench.toolkit.features",
           "fscil_bench.toolkit.base_models", "fscil_bench.run.host", "fscil_bench.run.worker",
           "fscil_bench.run.catalog", "fscil_bench.run.progress")


def prctl(option: int, value: int) -> None:
    """``prctl(option, value)`` where the C library has it (Linux); a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def die_with_parent() -> None:
    """Be killed when the parent process ends (Linux)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def preload() -> None:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def exit_event(pid: int, status: int) -> dict:
    if os.WIFSIGNALED(status):
        return {"event": "exit", "pid": pid, "code": None, "signal": os.WTERMSIG(status)}
    return {"event": "exit", "pid": pid, "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, "signal": None}


def sweep(child: int, own_namespace: bool) -> None:
    """Kill what the ended ``child`` left running (see the module docstring)."""
    if not own_namespace:
        with contextlib.suppress(OSError):
            os.killpg(child, signal.SIGKILL)
        return
    me = os.getpid()
    for _ in range(20):  # processes may fork while being killed: repeat until none is left
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not others:
            return
        for pid in others:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def become_worker(control: socket.socket, request: dict, fd: int) -> None:
    """In the forked child: set up, serve, and exit (never returns)."""
    code = 1
    try:
        os.setsid()
        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        die_with_parent()
        prctl(PR_SET_DUMPABLE, 1)
        from fscil_bench.run.limits import apply_memory_limit

        apply_memory_limit(request.get("memory_bytes"))
        os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
        os.chdir(request["scratch"])
        from fscil_bench.run.worker import serve

        code = serve(socket.socket(fileno=fd), request.get("role", "run"))
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(control: socket.socket, own_namespace: bool) -> None:
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([control], [], [], 0.1)
        if ready:
            try:
                data, fds, _, _ = socket.recv_fds(control, 1 << 16, 1)
            except OSError:
                return
            if not data:
                return  # the runner is gone
            request = json.loads(data)
            if request.get("op") == "fork" and fds:
                pid = os.fork()
                if pid == 0:
                    become_worker(control, request, fds[0])
                os.close(fds[0])
                children.add(pid)
                control.send(json.dumps({"pid": pid}).encode())
            else:
                for fd in fds:
                    os.close(fd)
                if request.get("op") == "kill" and int(request.get("pid", 0)) in children:
                    with contextlib.suppress(OSError):
                        os.killpg(int(request["pid"]), signal.SIGKILL)
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.discard(pid)
                    sweep(pid, own_namespace)
                    control.send(json.dumps(exit_event(pid, status)).encode())


def main(argv: list[str]) -> None:
    control = socket.socket(fileno=int(argv[0]))
    if sys.path and sys.path[0] in ("", os.getcwd()):  # ``-m`` put the working folder first: not ours to import from
        del sys.path[0]
    preload()
    prctl(PR_SET_DUMPABLE, 0)  # workers (same user) may not ptrace or read the spawner's memory
    control.send(json.dumps({"ready": True}).encode())
    serve(control, "--own-pid-namespace" in argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
