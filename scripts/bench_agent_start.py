#!/usr/bin/env python3
"""The session agent's start-up CPU against a bare `python3`, in a rootfs.

Every sandbox a pool or a server starts pays for the agent's start before
it can say `standby`: the interpreter, then every module the agent
imports. Under load that is throughput (docs/BENCHMARKS.md, serve). Per
rootfs given (default: the cache's, `rlm-sandbox rootfs build`), chrooted
into it, alternating, N times each, by the CPU time (user + system) wait4
reports:
- `python3 -I -B -c pass`: the floor (a bare interpreter, as the raw
  runtime's `python3 -c CODE` starts);
- `python3 -I -B -c 'import _rlm_agent.__main__'`: the agent's imports up
  to its main, i.e. all it loads before `standby`;
and which of the modules the agent no longer imports at its start are
loaded. Two rootfs paths (e.g. one built by an older checkout with
`rootfs build --output DIR`) are measured in the same run, side by side.
Usage (as root, for chroot): scripts/bench_agent_start.py [N] [ROOTFS ...]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

DEFAULT_ROOTFS = "/var/cache/rlm-sandbox/rootfs"
BARE = "pass"
AGENT = "import _rlm_agent.__main__"
DEFERRED = ("re", "enum", "json", "typing", "traceback", "linecache", "tokenize", "ast", "signal")


def cpu_ms(rootfs: str, code: str) -> float:
    """CPU time of one chrooted `python3 -I -B -c code`, in ms."""
    proc = subprocess.Popen(["chroot", rootfs, "/usr/bin/python3", "-I", "-B", "-c", code],
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{rootfs}: python3 -c {code!r} exited {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def loaded(rootfs: str) -> Tuple[int, List[str]]:
    """How many modules the agent's start leaves loaded, and which of DEFERRED."""
    probe = AGENT + "; import sys; print(len(sys.modules)); print(' '.join(m for m in %r if m in sys.modules))" % (
        DEFERRED,)
    out = subprocess.run(["chroot", rootfs, "/usr/bin/python3", "-I", "-B", "-c", probe],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    return int(out[0]), (out[1].split() if len(out) > 1 else [])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    roots = sys.argv[2:] or [DEFAULT_ROOTFS]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    times: Dict[Tuple[str, str], List[float]] = {(r, c): [] for r in roots for c in (BARE, AGENT)}
    for _ in range(n):
        for r in roots:
            for c in (BARE, AGENT):
                times[(r, c)].append(cpu_ms(r, c))
    for r in roots:
        bare, agent = statistics.median(times[(r, BARE)]), statistics.median(times[(r, AGENT)])
        count, deferred = loaded(r)
        print(f"{r}:")
        print(f"  CPU ms, median of {n}: bare python3 {bare:.2f} | agent's imports {agent:.2f} | "
              f"agent - bare {agent - bare:.2f} | agent/bare {agent / bare:.2f}")
        print(f"  modules loaded at the agent's start: {count}; of {' '.join(DEFERRED)}: {' '.join(deferred) or 'none'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
