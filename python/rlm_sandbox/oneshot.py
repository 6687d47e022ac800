"""`run()`: one-shot code in a fresh sandbox (`rlm-sandbox run --json`)."""

from __future__ import annotations

import json
import subprocess
from typing import Any, List, Mapping, Optional

from .binary import find_binary
from .errors import ProtocolError, SandboxUnavailable
from .options import COMMON, environment, to_flags
from .results import Result
from .server import ServerArg, one_line, refusal, request_args, resolve


def run(
    code: str,
    *,
    binary: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    server: ServerArg = None,
    wait: Optional[float] = None,
    **settings: Any,
) -> Result:
    """Runs `code` once and returns the result contract of `run --json`.
    Settings are `rlm-sandbox run`'s flags with `_` for `-`. A bad setting
    is a ValueError; no runtime, rootfs or root privilege is
    SandboxUnavailable. The code travels on stdin (any size, any bytes).

    `server` (or RLM_SANDBOX_SERVER, unless `server=False`) runs it on an
    `rlm-sandbox serve` instead (`{"op": "run"}`, docs/SERVE.md): `wait`
    is its admission wait (ServerBusy when it runs out), a setting the
    server keeps to itself is ServerRefused, an unreachable socket is
    ServerUnreachable; nothing is started here then."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, not {type(code).__name__}")
    flags = to_flags(settings, COMMON, "run()")  # a typo is refused before any lookup
    path = resolve(server, "run()")
    if path is not None:
        if env:
            raise TypeError("run(server=...) takes no env: the server's environment and RLM_* variables apply")
        return _run_on(path, code, request_args(wait, flags))
    if wait is not None:
        raise TypeError("run(): wait= is a server request's admission wait; it goes with server=")
    argv = [binary or find_binary(), "run", "--json", *flags, "-"]
    proc = subprocess.run(argv, input=code.encode("utf-8"), capture_output=True, env=environment(env or {}))
    stderr = proc.stderr.decode("utf-8", "replace")[-4000:]
    try:
        obj = json.loads(proc.stdout)
    except ValueError:
        raise SandboxUnavailable(
            f"rlm-sandbox run exited {proc.returncode} without a JSON result", stderr=stderr
        ) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"rlm-sandbox run printed {proc.stdout[:200]!r}", stderr=stderr)
    if "status" not in obj:
        error = obj.get("error") or {}
        kind, message = error.get("kind"), error.get("message")
        if kind == "config":
            raise ValueError(f"run(): {message}")
        raise SandboxUnavailable(f"the sandbox could not run ({kind}): {message}", kind=kind, stderr=stderr)
    return Result.from_json(obj)


def _run_on(path: str, code: str, args: List[str]) -> Result:
    """One `{"op": "run"}` on the server at `path`."""
    answer = one_line(path, {"op": "run", "code": code, "args": args})
    result = answer.get("result")
    if answer.get("ok") is True and isinstance(result, dict):
        return Result.from_json(result)
    if answer.get("ok") is True:
        raise ProtocolError(f"the server at {path} answered a run without a result")
    raise refusal(answer.get("error"), path)
