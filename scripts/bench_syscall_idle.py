#!/usr/bin/env python3
"""What one system call costs inside the sandbox right after the sandbox
was idle, runsc against runc (the baseline), in one run.

A cell in a session comes after an idle gap (the host's round trip, a
model's think time), and under gVisor every system call the agent makes
is a trip into the Sentry. This times, inside `rlm-sandbox run`, five
`getppid()` calls after sleeping 0 (back to back), 0.2, 1 and 10 ms,
200 times each (median per call), on each runtime, and prints the
runsc/runc ratio per gap. It explains the floor under a runsc cell
(docs/BENCHMARKS.md, issue 20): each of the agent's system calls in a
cell, and each clock read (which traps under this runsc too), pays it.

Usage: scripts/bench_syscall_idle.py [BIN]   (as root; BIN defaults to
target/release/rlm-sandbox)
"""

from __future__ import annotations

import json
import subprocess
import sys

GAPS = (0.0, 0.0002, 0.001, 0.01)

PROBE = f"""
import json, os, statistics, time
pc = time.perf_counter_ns
out = {{}}
for gap in {GAPS!r}:
    xs = []
    for _ in range(200):
        if gap:
            time.sleep(gap)
        t = pc()
        os.getppid(); os.getppid(); os.getppid(); os.getppid(); os.getppid()
        xs.append((pc() - t) / 5000)
    out[str(gap)] = statistics.median(xs)
print(json.dumps(out))
"""


def measure(binary: str, runtime: str) -> dict[str, float]:
    done = subprocess.run(
        [binary, "run", "--runtime", runtime, "--json", "-c", PROBE],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(done.stdout)
    if result.get("status") != "ok":
        raise SystemExit(f"{runtime}: the probe failed: {result}")
    return {k: float(v) for k, v in json.loads(result["stdout"]).items()}


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/rlm-sandbox"
    runc, runsc = measure(binary, "runc"), measure(binary, "runsc")
    for gap in GAPS:
        key = str(gap)
        print(f"after {gap * 1000:5.1f} ms idle: runsc {runsc[key]:7.2f} us/syscall, "
              f"runc {runc[key]:5.2f} us/syscall, runsc/runc {runsc[key] / runc[key]:6.1f}x")


if __name__ == "__main__":
    main()
