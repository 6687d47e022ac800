"""What a SessionProcess speaks the session protocol over: the pipes of an
`rlm-sandbox session` process it started, or a connection to `rlm-sandbox
serve` (docs/SERVE.md). One reader of the protocol for both, so a server
session behaves as a local one (pipelining, calls, errors, ending).

Ending is the same in kind: end of input ends the session, whose sandbox
is then removed (by the process, or by the server); `terminate` waits for
that, then forces it (SIGTERM/SIGKILL, or hanging up the connection,
which the server takes as the client gone: its sandbox ends at once)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from typing import IO, List, Mapping, Optional, Sequence, Union


class PipeChannel:
    """An `rlm-sandbox session` process: its stdin and stdout, and its
    stderr for error messages."""

    def __init__(self, argv: List[str], env: Mapping[str, str], pass_fds: Sequence[int] = ()) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            # Its own process group: a Ctrl-C meant for this Python process
            # must not kill the sandbox under it.
            start_new_session=True,
            # A prelude's sealed memfd (rlm_sandbox.prelude), if any.
            pass_fds=tuple(pass_fds),
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.stderr: Optional[IO[bytes]] = self.proc.stderr

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, size: int) -> bytes:
        return os.read(self.fd, size)

    def write(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(data)
        stdin.flush()

    def reap(self) -> str:
        """After the end of stdout: waits for the process; what ended."""
        self.proc.wait()
        return f"the session process exited (code {self.proc.returncode})"

    def end_input(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, grace: float) -> None:
        terminate(self.proc, grace)


class SocketChannel:
    """A connection to `rlm-sandbox serve` after its opening line. `pid` is
    the server's (SO_PEERCRED); there is no stderr (the server logs)."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.stderr: Optional[IO[bytes]] = None
        self._ended = threading.Event()
        self._lock = threading.Lock()

    def read(self, size: int) -> bytes:
        try:
            data = self.sock.recv(size)
        except ConnectionResetError:
            # Linux reports a reset once the queue is read when the server
            # closed with our bytes unread (a refusal): an end like any.
            data = b""
        except OSError:
            if self.sock.fileno() < 0:
                data = b""  # closed by terminate()
            else:
                raise
        if not data:
            self._ended.set()
        return data

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reap(self) -> str:
        return "the rlm-sandbox server closed the connection"

    def end_input(self) -> None:
        """Ends the session (the server sees the end of its input) while
        its answers can still be read."""
        with self._lock:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def kill(self) -> None:
        """Hangs up: the server ends the sandbox at once."""
        with self._lock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def alive(self) -> bool:
        return not self._ended.is_set()

    def terminate(self, grace: float) -> None:
        """End of input, then up to `grace` for the server to close the
        connection (it does once the sandbox is gone), then a hang-up.
        The reader (if any) sees the end; then the socket is closed."""
        self.end_input()
        if not self._ended.wait(grace):
            self.kill()
            self._ended.wait(grace)
        if self._ended.is_set():
            self.sock.close()


#: What a SessionProcess speaks over.
Channel = Union[PipeChannel, SocketChannel]


def terminate(proc: "subprocess.Popen[bytes]", grace: float) -> None:
    """End of input, then SIGTERM, then SIGKILL: each lets the session
    remove its sandbox, the last only if it hangs. Safe to call twice
    (and from a finalizer: it holds no reference to the client)."""
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    for step in (proc.terminate, proc.kill):
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            try:
                step()
            except OSError:
                return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
