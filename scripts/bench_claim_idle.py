#!/usr/bin/env python3
"""Time to interactive through a pooled SandboxInterpreter against the
time the machine was idle before the claim, in one run.

scripts/bench_pool.py claims as soon as the pool is full again, right
after a refill woke every process; an RLM task claims after the model
answered. This claims from `SandboxInterpreter.pool(3)` (construct +
start + first `execute("print(40 + 2)")`, as bench_pool.py) after each
idle gap in turn (the pool full, then a sleep), N times per gap, each
claim's sandbox removed before the next, and prints p50 / p99 (ms) per
gap and each gap's p50 over the first gap's.

The client, binary and rootfs are whatever PYTHONPATH, RLM_SANDBOX_BIN
and RLM_CACHE_DIR name, so an older tree is measured the same way:
    PYTHONPATH=/tmp/old/python RLM_SANDBOX_BIN=OLD_BIN RLM_CACHE_DIR=OLD_CACHE \\
        target/py/bin/python scripts/bench_claim_idle.py RUNTIME N

Usage: scripts/bench_claim_idle.py RUNTIME [N] [GAP_S ...]   (default gaps
0 0.05 0.2 0.5; as root)
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Dict, List

from bench_pool_ab import drain  # scripts/ is on sys.path: it holds this script
from rlm_sandbox.dspy import SandboxInterpreter


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    runtime = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    gaps = [float(g) for g in sys.argv[3:]] or [0.0, 0.05, 0.2, 0.5]
    samples: Dict[float, List[float]] = {gap: [] for gap in gaps}
    with SandboxInterpreter.pool(3, runtime=runtime) as pool:
        assert pool.wait_full(timeout=600)
        for gap in gaps:
            for _ in range(n):
                assert pool.wait_full(timeout=600)
                time.sleep(gap)
                t = time.perf_counter()
                interpreter = SandboxInterpreter(pool=pool)
                interpreter.start()
                out = interpreter.execute("print(40 + 2)")
                samples[gap].append((time.perf_counter() - t) * 1000)
                assert out == "42", out
                interpreter.shutdown()
                drain(pool)  # removed before the next claim, not during it
    first = statistics.median(samples[gaps[0]])
    for gap in gaps:
        xs = samples[gap]
        print(f"{runtime} TTI after {gap:g} s idle: p50 {statistics.median(xs):.3f} p99 {pct(xs, 0.99):.3f} ms"
              f" | /after {gaps[0]:g} s {statistics.median(xs) / first:.2f}x (n={n})")


if __name__ == "__main__":
    main()
