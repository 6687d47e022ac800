#!/usr/bin/env python3
"""A pooled claim's latency, an older tree against this one, in one run.

Per runtime, alternating sample by sample in one process (so a load that
changes during the run weighs on both alike), p50 / p99 (ms) and the
older/this ratio of:
- time to interactive through SandboxInterpreter drawn from
  `SandboxInterpreter.pool(3)` (construct + start + first
  `execute("print(40 + 2)")`);
- `Pool(3).run("print(40 + 2)")`.
Before every sample each pool of both trees is full (a refill of one
must not run during a sample of the other) and the sandbox of the last
`run` is removed (off the timed path, in both trees).

Usage (PYTHONPATH=python; RLM_STATE_DIR as for the tests):
    scripts/bench_pool_ab.py RUNTIME N OLD_PYTHON_DIR OLD_BIN OLD_CACHE [NEW_CACHE]
OLD_PYTHON_DIR holds the older client's `rlm_sandbox` package (e.g.
`git archive OLD python | tar -x -C /tmp/old` then /tmp/old/python),
OLD_BIN its binary, OLD_CACHE a rootfs cache for it (the rootfs embeds
the agent, so each tree needs its own); NEW_CACHE defaults to
$RLM_CACHE_DIR. The older package is loaded as `rlm_sandbox_old` (its
imports are relative).
"""

from __future__ import annotations

import importlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List


def p99(xs: List[int]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))] / 1e6


def main() -> None:
    runtime, n, old_python, old_bin, old_cache = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
    new_cache = sys.argv[6] if len(sys.argv) > 6 else os.environ["RLM_CACHE_DIR"]
    new_bin = os.environ.get("RLM_SANDBOX_BIN") or str(Path(__file__).resolve().parent.parent / "target/release/rlm-sandbox")
    staging = tempfile.mkdtemp(prefix="bench-pool-ab-")
    shutil.copytree(Path(old_python) / "rlm_sandbox", Path(staging) / "rlm_sandbox_old")
    sys.path.append(staging)
    trees = {"older": ("rlm_sandbox_old", old_bin, old_cache), "this": ("rlm_sandbox", new_bin, new_cache)}
    interpreters: Dict[str, Any] = {}
    pools: Dict[str, Any] = {}
    for name, (module, binary, cache) in trees.items():
        package = importlib.import_module(module)
        dspy = importlib.import_module(module + ".dspy")
        env = {"RLM_CACHE_DIR": cache, "RLM_SANDBOX_BIN": binary}
        interpreters[name] = dspy.SandboxInterpreter
        pools[name] = (
            dspy.SandboxInterpreter.pool(3, runtime=runtime, binary=binary, env=env),
            package.Pool(3, runtime=runtime, binary=binary, env=env),
        )
    times: Dict[str, Dict[str, List[int]]] = {name: {"tti": [], "run": []} for name in trees}

    def full() -> None:
        for interpreter_pool, run_pool in pools.values():
            assert interpreter_pool.wait_full(timeout=600) and run_pool.wait_full(timeout=600)

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    try:
        for _ in range(n):
            for name, interpreter in interpreters.items():
                interpreter_pool, run_pool = pools[name]
                full()
                t = time.perf_counter_ns()
                it = interpreter(pool=interpreter_pool)
                it.start()
                out = it.execute("print(40 + 2)")
                times[name]["tti"].append(time.perf_counter_ns() - t)
                assert out == "42", out
                it.shutdown()
                full()
                t = time.perf_counter_ns()
                result = run_pool.run("print(40 + 2)")
                times[name]["run"].append(time.perf_counter_ns() - t)
                assert result.stdout == "42\n", result
                for retired in run_pool._keeper.retiring:  # a thread (older) or (process, files)
                    retired.join() if isinstance(retired, threading.Thread) else retired[0].terminate(10)
    finally:
        for interpreter_pool, run_pool in pools.values():
            interpreter_pool.close()
            run_pool.close()
        shutil.rmtree(staging, ignore_errors=True)
    med = statistics.median
    for name in trees:
        row = times[name]
        print(f"{runtime} {name:5s} TTI p50 {med(row['tti']) / 1e6:.3f} p99 {p99(row['tti']):.3f} ms | "
              f"pool.run p50 {med(row['run']) / 1e6:.3f} p99 {p99(row['run']):.3f} ms")
    old, new = times["older"], times["this"]
    print(f"{runtime} older/this p50: TTI {med(old['tti']) / med(new['tti']):.2f}x, "
          f"pool.run {med(old['run']) / med(new['run']):.2f}x (n={n}, load after {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
