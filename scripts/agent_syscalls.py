#!/usr/bin/env python3
"""The agent's system calls per warm cell, counted by gVisor itself.

Why: under runsc every system call of the agent is a round trip into the
Sentry (tens of microseconds once the sandbox was idle: see
scripts/bench_syscall_idle.py), so the calls on a cell's path, between
the `exec`'s read and the `done`'s write, are most of what a warm step
costs beyond the floor. This runs a `SandboxInterpreter` on runsc with
`--strace` (RLM_RUNSC_FLAGS), steps it CELLS times with `print(6 * 7)`,
and prints for the last cell the main thread's calls from the read that
brought its `exec` to the write of its `done` (the path), and those after
it until the next read (off the path: the host reads the `done`
meanwhile). Nothing is timed: strace slows every call.

Usage: PYTHONPATH=python python scripts/agent_syscalls.py [CELLS]
(RLM_SANDBOX_BIN names the binary.)
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

from rlm_sandbox.dspy import SandboxInterpreter

#: One syscall's exit in runsc's strace log: thread id, name, arguments.
EXIT = re.compile(r"\[\s*\d+:\s*(\d+)\] \S+ X (\w+)\((.*)$")


def calls(log: Path) -> List[Tuple[str, str, str]]:
    """(thread, name, arguments) of every system call exit, in order."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        m = EXIT.search(line)
        if m:
            found.append((m.group(1), m.group(2), m.group(3)))
    return found


def main() -> None:
    cells = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="rlm-agent-syscalls.") as tmp:
        flags = os.environ.get("RLM_RUNSC_FLAGS", "")
        os.environ["RLM_RUNSC_FLAGS"] = ("%s --strace --debug --debug-log=%s/" % (flags, tmp)).strip()
        interpreter = SandboxInterpreter(runtime="runsc")
        try:
            interpreter.start()
            for _ in range(cells):
                if interpreter.execute("print(6 * 7)") != "42":
                    raise SystemExit("the step printed something else")
        finally:
            interpreter.shutdown()
        logs = sorted(Path(tmp).glob("*.boot.txt"))
        if not logs:
            raise SystemExit("runsc wrote no boot log in %s" % tmp)
        seen = calls(logs[-1])
    # The last cell's exec: the main thread's read that brought `"cell":N`
    # (each step is one cell, the first with the interpreter's setup).
    marker = '\\"cell\\":%d,' % cells
    start = next((i for i, (_, name, args) in enumerate(seen) if name == "read" and marker in args), None)
    if start is None:
        raise SystemExit("no read of cell %d's exec in the log" % cells)
    main_thread = seen[start][0]
    path, after, done = [], [], False
    for tid, name, args in seen[start + 1:]:
        if tid != main_thread:
            continue
        if done and name == "read":
            break
        (after if done else path).append(name)
        if name == "write" and "host:[" in args:  # the frame channel: the done
            done = True
    print("runsc, one warm cell of SandboxInterpreter.execute(\"print(6 * 7)\"), the agent's main thread:")
    print("  on the path (exec's read .. done's write): read + %d: %s" % (len(path), ", ".join(path)))
    print("  after the done, before the next read: %d: %s" % (len(after), ", ".join(after)))


if __name__ == "__main__":
    main()
