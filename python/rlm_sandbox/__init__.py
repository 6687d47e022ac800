"""rlm-sandbox from Python: `Session` (a stateful sandboxed REPL with
sub-calls answered by host callables), `run` (one-shot code), `Pool`
(sandboxes started in advance, one per claim), and the
drop-in environments `rlm_sandbox.rlms` and `rlm_sandbox.dspy`."""

from .binary import find_binary
from .errors import (
    ProtocolError,
    SandboxError,
    SandboxUnavailable,
    ServerBusy,
    ServerRefused,
    ServerUnreachable,
    SessionDead,
)
from .oneshot import run
from .pool import Pool
from .results import Cell, CellValue, Result
from .server import stats as server_stats
from .session import RuntimeFallbackWarning, Session

__all__ = [
    "Cell",
    "CellValue",
    "Pool",
    "ProtocolError",
    "Result",
    "RuntimeFallbackWarning",
    "SandboxError",
    "SandboxUnavailable",
    "ServerBusy",
    "ServerRefused",
    "ServerUnreachable",
    "Session",
    "SessionDead",
    "find_binary",
    "run",
    "server_stats",
]
__version__ = "0.1.0"
