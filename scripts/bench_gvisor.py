#!/usr/bin/env python3
"""gVisor 2024 (systrap) against gVisor 2022 (ptrace), measured in one run.

Why: every later feature (sessions, warm sandboxes) lives on the cost of a
syscall and of a pipe round trip inside the sandbox, and that cost is the
runsc build's platform. Each measurement runs the raw runtime on the bundle
`rlm-sandbox bundle` writes (same config.json, same rootfs), the two builds
alternating so the shared machine's drift hits both alike; it prints medians
and the ratio old / new.

Usage: bench_gvisor.py RLM_SANDBOX_BIN NEW_RUNSC OLD_RUNSC [ROUNDS]
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSCALLS = 100_000
ROUND_TRIPS = 2_000

SYSCALL_CODE = f"""
import os, time
n = {SYSCALLS}
t = time.perf_counter_ns()
for _ in range(n):
    os.getppid()
print((time.perf_counter_ns() - t) / n / 1000)
"""

# Reads a line and writes it back, unbuffered, until EOF.
ECHO_CODE = """
import sys
r, w = sys.stdin.buffer, sys.stdout.buffer
for line in iter(r.readline, b""):
    w.write(line)
    w.flush()
"""

_ids = itertools.count()


class Build:
    """One runsc binary and the bundles its runs use."""

    def __init__(self, label: str, runsc: str, ours: str, work: Path) -> None:
        self.label, self.runsc, self.work = label, runsc, work
        self.bundles = {}
        for name, code in (("syscall", SYSCALL_CODE), ("echo", ECHO_CODE)):
            out = work / f"{label}-{name}"
            subprocess.run(
                [ours, "bundle", "--runtime", "runsc", "--runsc-path", runsc,
                 "--output", str(out), "-c", code],
                check=True, stdout=subprocess.DEVNULL,
            )
            self.bundles[name] = out

    def argv(self, bundle: str) -> list[str]:
        """The raw runtime call, as rlm-sandbox makes it, with a fresh id."""
        cid = f"rlms-benchgv-{os.getpid()}-{next(_ids)}"
        return [self.runsc, "--root", str(self.work / f"state-{self.label}"),
                "--log-format", "json", "--oci-seccomp", "--network=none",
                "run", "--bundle", str(self.bundles[bundle]), cid]

    def syscall_us(self) -> float:
        out = subprocess.run(self.argv("syscall"), check=True, capture_output=True)
        return float(out.stdout.decode().strip())

    def round_trips_us(self) -> list[float]:
        proc = subprocess.Popen(self.argv("echo"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin and proc.stdout
        line = b"x" * 63 + b"\n"
        samples = []
        # The first round trips include the interpreter's start.
        for i in range(ROUND_TRIPS + 20):
            t = time.perf_counter_ns()
            proc.stdin.write(line)
            proc.stdin.flush()
            if proc.stdout.readline() != line:
                raise RuntimeError(f"{self.label}: echo broke after {i} round trips")
            if i >= 20:
                samples.append((time.perf_counter_ns() - t) / 1000)
        proc.stdin.close()
        proc.wait(timeout=30)
        return samples


def cold_ms(ours: str, runsc: str) -> float:
    t = time.perf_counter()
    subprocess.run([ours, "run", "--runtime", "runsc", "-c", "print(1)"],
                   env={**os.environ, "RLM_RUNSC_PATH": runsc}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ours, new_path, old_path = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    with tempfile.TemporaryDirectory(prefix="rlm-bench-gv.") as tmp:
        work = Path(tmp)
        new, old = Build("new", new_path, ours, work), Build("old", old_path, ours, work)
        both = (new, old)
        syscall = {b.label: [] for b in both}
        trips = {b.label: [] for b in both}
        cold = {b.label: [] for b in both}
        for r in range(rounds):
            print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
            for b in both:
                syscall[b.label].append(b.syscall_us())
                trips[b.label].extend(b.round_trips_us())
            for _ in range(3):
                for b in both:
                    cold[b.label].append(cold_ms(ours, b.runsc))
    med = {k: statistics.median(v) for k, v in syscall.items()}
    print(f"one syscall (os.getppid, {SYSCALLS} per run, median of {rounds} runs): "
          f"2024 {med['new']:.2f} us   2022 {med['old']:.2f} us   "
          f"ratio 2022/2024 {med['old'] / med['new']:.1f}")
    p50 = {k: pct(v, 0.5) for k, v in trips.items()}
    p99 = {k: pct(v, 0.99) for k, v in trips.items()}
    print(f"pipe round trip host -> sandboxed Python -> host ({rounds}x{ROUND_TRIPS}): "
          f"2024 p50 {p50['new']:.0f} / p99 {p99['new']:.0f} us   "
          f"2022 p50 {p50['old']:.0f} / p99 {p99['old']:.0f} us   "
          f"ratio of p50 2022/2024 {p50['old'] / p50['new']:.1f}")
    cm = {k: statistics.median(v) for k, v in cold.items()}
    print(f"cold rlm-sandbox run -c 'print(1)' (median of {3 * rounds}): "
          f"2024 {cm['new']:.0f} ms   2022 {cm['old']:.0f} ms   "
          f"ratio 2022/2024 {cm['old'] / cm['new']:.2f}")


if __name__ == "__main__":
    main()
