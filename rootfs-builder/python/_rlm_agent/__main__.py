"""Starts the agent: `python3 -I -B -m _rlm_agent`, or `python3 -I -B -c
'import _rlm_agent.__main__ as agent; agent.main()'` (src/bundle/spec.rs:
the same start without runpy's imports, ~3 ms of CPU)."""

from __future__ import annotations

import os
import sys

from .dispatch import Agent, agent_traceback
from .output import private_fd, text_stream


# --- Start ---------------------------------------------------------------------------


def _setup_descriptors(host_in: int, host_out: int) -> tuple[int, int, int, int]:
    """Moves the host channel off its descriptors (user code must not reach
    it by accident), keeps the sandbox's stderr as the diagnostic channel,
    and points fds 0 and 1 at /dev/null. The channel is on fds 0 and 1, or
    on the two a runtime that relays stdio passed past its relay (then
    closed here). (host_in, host_out, diag, devnull)."""
    fds = private_fd(host_in), private_fd(host_out), private_fd(2)
    for fd in {host_in, host_out} - {0, 1}:
        os.close(fd)
    null = os.open("/dev/null", os.O_RDWR)
    devnull = private_fd(null)
    os.close(null)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    return fds + (devnull,)


def _setup_streams() -> None:
    """sys.stdin/stdout/stderr as the cells need them (see text_stream)."""
    sys.stdin = text_stream(0, "r")
    sys.stdout = text_stream(1, "w")
    sys.stderr = text_stream(2, "w")
    sys.argv = [""]


def main(host_in: int = 0, host_out: int = 1) -> None:
    """Sets up the channels and serves the host until it closes its end:
    its frames arrive on `host_in`, ours go out on `host_out`."""
    try:
        fds = _setup_descriptors(host_in, host_out)
    except OSError as e:
        os.write(2, ("rlm-sandbox agent: cannot set up its descriptors: %s\n" % e).encode())
        os._exit(1)
    _setup_streams()
    try:
        import faulthandler
        faulthandler.enable(file=fds[2], all_threads=True)
    except Exception:
        pass
    agent = Agent(*fds)
    agent.interrupts.install()
    agent.start()
    try:
        # Everything a claim does not decide is done: say so, then wait.
        agent.standby()
        agent.serve()
    except BaseException:
        agent.die("the main loop failed:\n" + agent_traceback())


#: Keeps this module alive once sys.modules["__main__"] is the user's.
_SELF = sys.modules.get(__name__)

if __name__ == "__main__":
    main()
