"""The client side of `rlm-sandbox serve` (docs/SERVE.md): which socket a
call uses, connecting to it, the opening line, and the one-line answers
of `run` and `stats`. A session's lines after the opening are the
session protocol, spoken by rlm_sandbox.process over the same socket.

Why a socket and not `rlm-sandbox session --server`: one process less
per session (the relay would copy every line twice), and the client's
own `close`/finalizer ends the connection, which ends the sandbox.

A client that cannot reach the server gets ServerUnreachable naming the
socket; it never starts a sandbox itself (no silent cold fallback)."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any, Dict, List, Mapping, Optional, Union

from .channels import SocketChannel
from .errors import ProtocolError, SandboxError, SandboxUnavailable, ServerBusy, ServerRefused, ServerUnreachable

JSONDict = Dict[str, Any]
SERVER_VAR = "RLM_SANDBOX_SERVER"
#: `server=` values: a socket path; None for RLM_SANDBOX_SERVER (if set);
#: False to start sandboxes here even when that variable is set.
ServerArg = Union[None, bool, str, "os.PathLike[str]"]
#: Settings only a request to a server has: its admission wait (seconds).
REQUEST_ONLY = frozenset({"wait"})
# An answer line is at most a run's result (output capped by the server).
MAX_ANSWER = 256 * 1024 * 1024
_REFUSALS = ("forbidden", "bad_request", "busy")


def resolve(server: ServerArg, what: str) -> Optional[str]:
    """The socket path a call uses, or None for a local sandbox: `server`
    if given, else RLM_SANDBOX_SERVER (empty counts as unset); False opts
    out of the variable."""
    if server is False:
        return None
    if server is None or server is True:
        path = os.environ.get(SERVER_VAR) or None
        if server is True and path is None:
            raise ValueError(f"{what}: server=True uses {SERVER_VAR}, which is not set; pass server='/path/to.sock'")
        return path
    if isinstance(server, (str, os.PathLike)):
        path = os.fspath(server)
        if not path:
            raise ValueError(f"{what}: server must be a socket path, not an empty string")
        return path
    raise TypeError(f"{what}: server must be a socket path (str or os.PathLike), None or False, not {server!r}")


def connect(path: str) -> socket.socket:
    """A connected AF_UNIX stream socket; ServerUnreachable names the
    socket and says that nothing was started."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise ServerUnreachable(
            f"cannot reach the rlm-sandbox server at {path} ({e.strerror or e}; is `rlm-sandbox serve "
            f"--socket {path}` running, and may this user open the socket?); no sandbox was started",
            socket=path,
        ) from None
    return sock


def send_opening(sock: socket.socket, opening: Mapping[str, Any]) -> None:
    """Writes the first line. A server refusing the peer answers and
    closes before reading it: the write then fails with a broken pipe (or
    a reset) while the refusal waits in the receive queue, so that error
    is left to the read that follows."""
    data = (json.dumps(opening, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def server_pid(sock: socket.socket) -> int:
    """The server's pid (SO_PEERCRED): what a server Session reports as
    its `pid`, there being no process of its own."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def read_answer(sock: socket.socket, path: str) -> JSONDict:
    """The one line answering a `run` or `stats` opening, parsed strictly."""
    buf = bytearray()
    while b"\n" not in buf:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            chunk = b""  # the server closed with our bytes unread: what it wrote is all there is
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_ANSWER:
            raise ProtocolError(f"the server at {path} wrote a line above {MAX_ANSWER} bytes")
    line, newline, _ = bytes(buf).partition(b"\n")
    if not newline:
        raise SandboxUnavailable(f"the server at {path} closed the connection without an answer")
    try:
        answer = json.loads(line)
    except ValueError:
        raise ProtocolError(f"the server at {path} answered with a line that is not JSON: {line[:200]!r}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok", True), bool):
        raise ProtocolError(f"the server at {path} answered {line[:200]!r}")
    return answer


def refusal(error: Any, path: str, stderr: str = "") -> SandboxError:
    """The exception for a server's `{"kind", "message"}` error: ServerBusy,
    ServerRefused (forbidden, bad_request), else SandboxUnavailable."""
    error = error if isinstance(error, dict) else {}
    kind, message = error.get("kind"), error.get("message")
    kind = kind if isinstance(kind, str) else None
    text = f"the rlm-sandbox server at {path} refused the request ({kind}): {message}"
    if kind == "busy":
        return ServerBusy(text, kind=kind, stderr=stderr)
    if kind in _REFUSALS:
        return ServerRefused(text, kind=kind, stderr=stderr)
    return SandboxUnavailable(f"the sandbox could not start on the server at {path} ({kind}): {message}", kind=kind)


def request_args(wait: Optional[float], flags: List[str]) -> List[str]:
    """A request's `args`: its flags, then `--wait` if given."""
    if wait is None:
        return flags
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 86400:
        raise ValueError(f"wait={wait!r}: expected seconds, a number from 0 to 86400")
    return [*flags, "--wait", str(float(wait))]


def open_session(path: str, args: List[str]) -> SocketChannel:
    """A connection whose session protocol starts now (the first line it
    reads is `ready`, or the server's refusal)."""
    sock = connect(path)
    try:
        send_opening(sock, {"op": "session", "args": args})
        return SocketChannel(sock, server_pid(sock))
    except BaseException:
        sock.close()
        raise


def one_line(path: str, opening: Mapping[str, Any]) -> JSONDict:
    """Connects, sends `opening` and reads its one-line answer."""
    with connect(path) as sock:
        send_opening(sock, opening)
        return read_answer(sock, path)


def stats(server: ServerArg = None) -> JSONDict:
    """The server's `stats` (live sandboxes, pools, queue, refusals)."""
    path = resolve(server, "stats()")
    if path is None:
        raise ValueError(f"stats(): no server given and {SERVER_VAR} is not set")
    answer = one_line(path, {"op": "stats"})
    if answer.get("ok") is False:
        raise refusal(answer.get("error"), path)
    return answer
