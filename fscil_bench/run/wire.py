"""Messages between the runner and a method's worker: a JSON header and raw arrays, over a socket.

A message is a 4-byte length, a UTF-8 JSON object (at most :data:`MAX_HEADER` bytes) and then
the bytes of the arrays it lists under ``"arrays"`` (name, dtype, shape), in that order. Only the
dtypes of :data:`DTYPES` are accepted. Nothing received is unpickled: the runner reads what an
untrusted worker sends as JSON and numbers, so a worker cannot run code in the runner. (The
runner's own objects, e.g. a benchmark's transforms, travel to the worker as a pickled ``uint8``
array that only the worker unpickles.)

Reads take an absolute ``deadline`` (``time.monotonic()``); :class:`Timeout` is raised when it
passes, :class:`Closed` when the other end is gone.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from typing import Any

import numpy as np

MAX_HEADER = 1 << 20
DTYPES = {"uint8", "int16", "int32", "int64", "float32", "float64", "bool"}


class WireError(RuntimeError):
    """A message that breaks the format (bad JSON, unknown dtype, too large)."""


class Closed(WireError):
    """The other end closed the connection (or its process died)."""


class Timeout(WireError):
    """No complete message before the deadline."""


def send(sock: socket.socket, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
         deadline: float | None = None) -> None:
    """Send ``header`` (JSON-serialisable) and ``arrays`` as one message, by ``deadline``."""
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    header = {**header, "arrays": [{"name": k, "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()]}
    payload = json.dumps(header, allow_nan=True).encode()
    if len(payload) > MAX_HEADER:
        raise WireError(f"message header of {len(payload)} bytes is over {MAX_HEADER}")
    _write(sock, struct.pack("!I", len(payload)) + payload, deadline)
    for value in arrays.values():
        if value.nbytes:
            _write(sock, memoryview(value).cast("B"), deadline)


def _write(sock: socket.socket, data: bytes | memoryview, deadline: float | None) -> None:
    _set_timeout(sock, deadline)
    try:
        sock.sendall(data)
    except TimeoutError:
        raise Timeout("the other end did not read before the deadline") from None
    except OSError as exc:
        raise Closed(f"connection lost ({exc})") from None


def _set_timeout(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout("no answer before the deadline")
    sock.settimeout(left)


def receive(sock: socket.socket, deadline: float | None = None, max_bytes: int = 1 << 34) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The next message: its header and its arrays (at most ``max_bytes`` of them in all)."""
    (size,) = struct.unpack("!I", _read(sock, 4, deadline))
    if size > MAX_HEADER:
        raise WireError(f"message header of {size} bytes is over {MAX_HEADER}")
    try:
        header = json.loads(_read(sock, size, deadline).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"unreadable message header: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("message header is not a JSON object")
    specs = header.pop("arrays", [])
    if not isinstance(specs, list):
        raise WireError("message 'arrays' is not a list")
    plan, total = [], 0
    for spec in specs:
        try:
            name, dtype, shape = str(spec["name"]), str(spec["dtype"]), tuple(int(d) for d in spec["shape"])
        except (KeyError, TypeError, ValueError):
            raise WireError(f"bad array description {spec!r}") from None
        if dtype not in DTYPES or any(d < 0 for d in shape) or len(shape) > 8:
            raise WireError(f"array {name!r}: dtype {dtype} shape {shape} not accepted")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        total += nbytes
        if total > max_bytes:
            raise WireError(f"message arrays of over {max_bytes} bytes")
        plan.append((name, dtype, shape, nbytes))
    arrays = {}
    for name, dtype, shape, nbytes in plan:
        buffer = bytearray(nbytes)
        _read_into(sock, memoryview(buffer), deadline)
        arrays[name] = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return header, arrays


def _read(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buffer = bytearray(n)
    _read_into(sock, memoryview(buffer), deadline)
    return bytes(buffer)


def _read_into(sock: socket.socket, view: memoryview, deadline: float | None) -> None:
    got = 0
    while got < len(view):
        _set_timeout(sock, deadline)
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            raise Timeout("no answer before the deadline") from None
        except OSError as exc:
            raise Closed(f"connection lost ({exc})") from None
        if n == 0:
            raise Closed("the other end closed the connection")
        got += n
