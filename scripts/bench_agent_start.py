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
- the agent started as `python3 -I -B -m _rlm_agent` (how it started
  before) and as the `-c` form src/bundle/spec.rs::agent_args gives now,
  each with its stdin at end of file: it starts, says `standby` (to
  /dev/null) and exits at the end of its input;
- `python3 -I -B -c 'import re, json'`: what a cell's first import of
  the two now costs (on the host's kernel: more under gVisor);
and which of the modules the agent no longer imports at its start are
loaded once it is up. Two rootfs paths (e.g. one built by an older
checkout with `rootfs build --output DIR`) are measured in the same run.
Runs in a private mount namespace of its own (a tmpfs /dev with a null
device over each rootfs's empty /dev), so no rootfs is changed.
Usage (as root): scripts/bench_agent_start.py [N] [ROOTFS ...]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

DEFAULT_ROOTFS = "/var/cache/rlm-sandbox/rootfs"
STARTS = {
    "bare python3 -c pass": ["-c", "pass"],
    "agent by -m": ["-m", "_rlm_agent"],
    "agent by -c": ["-c", "import _rlm_agent.__main__ as agent; agent.main()"],
    # What a cell's first `import re, json` costs now that no agent imports them.
    "python3 -c 'import re, json'": ["-c", "import re, json"],
}
DEFERRED = ("re", "enum", "json", "typing", "traceback", "linecache", "tokenize", "ast", "signal", "threading",
            "functools", "collections", "queue", "runpy")
#: Set in the re-executed copy that runs inside the private mount namespace.
IN_NAMESPACE = "RLM_BENCH_AGENT_START_NS"


def cpu_ms(rootfs: str, args: List[str]) -> float:
    """CPU time of one chrooted `python3 -I -B ARGS` (stdin at end of file), in ms."""
    proc = subprocess.Popen(["chroot", rootfs, "/usr/bin/python3", "-I", "-B", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{rootfs}: python3 {args!r} exited {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def loaded(rootfs: str) -> Tuple[int, List[str]]:
    """How many modules the agent's start leaves loaded, and which of DEFERRED."""
    probe = ("import _rlm_agent.__main__, sys; print(len(sys.modules)); "
             "print(' '.join(m for m in %r if m in sys.modules))" % (DEFERRED,))
    out = subprocess.run(["chroot", rootfs, "/usr/bin/python3", "-I", "-B", "-c", probe],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    return int(out[0]), (out[1].split() if len(out) > 1 else [])


def null_device(rootfs: str) -> None:
    """A tmpfs /dev holding only null over the rootfs's empty /dev (this namespace only)."""
    dev = os.path.join(rootfs, "dev")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "bench-dev", dev], check=True)
    subprocess.run(["mknod", "-m", "666", os.path.join(dev, "null"), "c", "1", "3"], check=True)


def main() -> None:
    if os.environ.get(IN_NAMESPACE) != "1":
        env = dict(os.environ, **{IN_NAMESPACE: "1"})
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv], env)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    roots = sys.argv[2:] or [DEFAULT_ROOTFS]
    for r in roots:
        null_device(r)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    times: Dict[Tuple[str, str], List[float]] = {(r, s): [] for r in roots for s in STARTS}
    for _ in range(n):
        for r in roots:
            for s, args in STARTS.items():
                times[(r, s)].append(cpu_ms(r, args))
    for r in roots:
        bare = statistics.median(times[(r, "bare python3 -c pass")])
        print(f"{r}: CPU ms, median of {n}")
        for s in STARTS:
            m = statistics.median(times[(r, s)])
            print(f"  {s:30} {m:6.2f}   - bare {m - bare:6.2f}   / bare {m / bare:5.2f}")
        count, deferred = loaded(r)
        print(f"  modules loaded by the agent's import: {count}; of {' '.join(DEFERRED)}: {' '.join(deferred) or 'none'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
