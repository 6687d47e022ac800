"""A standby's prelude (src/session/prelude.rs): Python source run in the
user's namespace before the agent reports `standby`, so what every claim
would run first (imports, a support module) is done before the claim.

The host places it at /rlm/prelude.py (read-only) when the session has
one. It runs once, in this sandbox only, in the globals the session then
starts with (`hello` keeps them; `reset` does not: fresh globals are
fresh). What it prints to stdout is discarded; its stderr is the agent's
diagnostics (the host's stderr). An exception in it ends the agent
before `standby`, its traceback on stderr: the standby fails to start."""

from __future__ import annotations

import sys

from .namespace import format_user_exception, new_namespace
from .output import flush

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

PRELUDE_FILE = "/rlm/prelude.py"


class PreludeFailed(Exception):
    """The prelude raised; the message is its traceback, agent frames removed."""


def run_prelude() -> Optional[dict[str, Any]]:
    """The user's globals after the prelude ran, or None without one."""
    try:
        with open(PRELUDE_FILE, "rb") as f:
            source = f.read()
    except FileNotFoundError:
        return None
    globals_ = new_namespace()
    try:
        exec(compile(source, PRELUDE_FILE, "exec", dont_inherit=True), globals_)
    except BaseException as e:  # SystemExit too: the prelude must not end the agent quietly
        raise PreludeFailed(format_user_exception(e)) from None
    finally:
        # Nothing it printed waits in a buffer for the first cell's output.
        flush(sys.stdout)
        flush(sys.stderr)
    return globals_


__all__ = ["PRELUDE_FILE", "PreludeFailed", "run_prelude"]
