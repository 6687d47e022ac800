#!/usr/bin/env python3
"""What the first use of a system call, or of a C code path, costs inside
a sandbox against its second use, runsc against runc, in one run.

Why: a pooled standby waits with everything a claim does not decide done
(the agent's `_warm`, rootfs-builder/python/_rlm_agent/dispatch.py), and
whatever a claim does for the first time is on its latency path. Under
gVisor's systrap a system call made from a place in the code for the first
time is trapped by seccomp and the Sentry patches that place to jump into
its own handler, so the first call from each place costs far more than
the next; code and data touched for the first time are faulted in by the
Sentry too. This times, inside `rlm-sandbox run` (one fresh sandbox per
round), the first and the second `os.pread` on a memory file (the agent
reads a cell's output files back so), the first and the second `poll`
(the agent's reader thread), and the first and the second decode by
CPython's C JSON scanner (the agent's first frame is a claim's `hello`),
and prints the medians of ROUNDS rounds per runtime with first/second.

Usage: scripts/bench_first_use.py [ROUNDS] [BIN]   (as root; ROUNDS
defaults to 15, BIN to target/release/rlm-sandbox)
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from typing import Dict, List

PROBE = """
import _json, json, os, select, time
pc = time.perf_counter_ns
def twice(f):
    a = pc(); f(); b = pc(); f(); c = pc()
    return (b - a) / 1000, (c - b) / 1000
fd = os.memfd_create("probe")
class Settings:
    strict = True; object_hook = None; object_pairs_hook = None
    parse_float = float; parse_int = int; parse_constant = None
scan = _json.make_scanner(Settings())
doc = '{"t": "hello", "n": [1, -2.5e3, true, false, null], "s": "a\\\\u00e9", "o": {}}'
pc(); pc()
out = {"pread": twice(lambda: os.pread(fd, 1, 0)),
       "poll": twice(lambda: select.poll().poll(0)),
       "json": twice(lambda: scan(doc, 0))}
print(json.dumps(out))
"""


def measure(binary: str, runtime: str, rounds: int) -> Dict[str, List[List[float]]]:
    """Per probe, [first, second] microseconds of each round."""
    seen: Dict[str, List[List[float]]] = {}
    for _ in range(rounds):
        done = subprocess.run([binary, "run", "--runtime", runtime, "-c", PROBE],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit("%s: the probe failed (%d): %s" % (runtime, done.returncode, done.stderr.strip()))
        for name, pair in json.loads(done.stdout).items():
            seen.setdefault(name, []).append(pair)
    return seen


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/rlm-sandbox"
    for runtime in ("runsc", "runc"):
        if shutil.which(runtime) is None:
            print("%s: not installed, skipped" % runtime)
            continue
        seen = measure(binary, runtime, rounds)
        row = []
        for name, pairs in seen.items():
            first = statistics.median(p[0] for p in pairs)
            second = statistics.median(p[1] for p in pairs)
            row.append("%s first %.1f us, second %.1f us (%.0fx)" % (name, first, second, first / second))
        print("%-6s %s (median of %d sandboxes)" % (runtime, " | ".join(row), rounds))


if __name__ == "__main__":
    main()
