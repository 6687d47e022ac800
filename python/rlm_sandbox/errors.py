"""The client's exceptions. Each says what to do, and carries what the
session reported (its error kind and the tail of its stderr) so a caller
can log the cause without parsing messages."""

from __future__ import annotations

from typing import Optional


class SandboxError(Exception):
    """Base of every error this package raises about the sandbox."""

    def __init__(self, message: str, *, kind: Optional[str] = None, stderr: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.stderr = stderr

    def __str__(self) -> str:
        text = super().__str__()
        if self.stderr.strip():
            text += "\n--- rlm-sandbox stderr (last lines) ---\n" + self.stderr.rstrip()
        return text


class SandboxUnavailable(SandboxError):
    """No sandbox could be started: no binary, no runtime, no rootfs, not
    root, or a setting the binary refused."""


class SessionDead(SandboxError):
    """The session's sandbox has ended (killed, out of memory, closed); it
    takes no more requests. Start a new Session."""


class ProtocolError(SandboxError):
    """The session process said something the protocol does not allow (or
    went silent mid-request): a bug or a mismatched binary version."""


class ServerUnreachable(SandboxUnavailable):
    """The `rlm-sandbox serve` socket could not be reached (no server, or
    this user may not open it). No sandbox was started: a server client
    never falls back to starting one itself. `socket` is the path."""

    def __init__(self, message: str, *, socket: str) -> None:
        super().__init__(message, kind="unreachable")
        self.socket = socket


class ServerRefused(SandboxUnavailable):
    """The server refused the request: `kind` is `forbidden` (this peer's
    uid, or a context it may not pass) or `bad_request` (a setting a
    client may not set, named in the message). Nothing was started."""


class ServerBusy(ServerRefused):
    """The server's admission limits were full for the request's whole
    wait (`kind` is `busy`; the message says what is full). Retry later,
    or wait longer (`wait=` seconds)."""
