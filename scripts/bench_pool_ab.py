#!/usr/bin/env python3
"""A pooled claim's latency, an older tree against this one, in one run.

Per runtime, alternating sample by sample (so a load that changes during
the run weighs on both alike), p50 / p99 (ms) and the older/this ratio of:
- time to interactive through SandboxInterpreter drawn from
  `SandboxInterpreter.pool(3)` (construct + start + first
  `execute("print(40 + 2)")`);
- the same with a tool and a first step that binds an input
  (`execute("print(q)", {"q": ...})`), as dspy.RLM's first step is (it
  installs DSPy's facade with a variable, its tools registered);
- `Pool(3).run("print(40 + 2)")`.
The trees take their turns in a shuffled order each round (a fixed
order lets one sample's teardown weigh on the next one's).
Each tree runs in a worker process of its own, with its own client, pools
and threads, as an application would (in one process the two clients'
pools and threads weighed on each other's samples unevenly). Before every
sample each pool of both trees is full (a refill of one must not run
during a sample of the other) and the sandboxes of the worker's last
interpreter and last `run` are removed (off the timed path, in both).
With RLM_BENCH_IDLE_S set, every sample waits that long after the pools
are full (a claim after the machine was idle: see bench_claim_idle.py).

Usage (PYTHONPATH=python; RLM_STATE_DIR as for the tests):
    scripts/bench_pool_ab.py RUNTIME N OLD_PYTHON_DIR OLD_BIN OLD_CACHE [NEW_CACHE]
OLD_PYTHON_DIR holds the older client's `rlm_sandbox` package (e.g.
`git worktree add /tmp/old OLD` then /tmp/old/python), OLD_BIN its
binary, OLD_CACHE a rootfs cache for it (the rootfs embeds the agent, so
each tree needs its own: `RLM_CACHE_DIR=OLD_CACHE OLD_BIN rootfs build`);
NEW_CACHE defaults to $RLM_CACHE_DIR.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve()


def p99(xs: List[int]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))] / 1e6


def drain(pool: Any) -> None:
    """Waits until the sandboxes the pool is retiring are removed: a sample
    must not overlap the removal of the one before."""
    keeper = pool._keeper
    if hasattr(keeper, "wait_retired"):  # handed to its refill thread first
        assert keeper.wait_retired(600)
    for retired in list(keeper.retiring):  # a thread (older trees) or (process, files)
        retired.join() if isinstance(retired, threading.Thread) else retired[0].terminate(10)


def worker(runtime: str) -> None:
    """One tree's client (the `rlm_sandbox` on PYTHONPATH): answers `full`,
    `tti` and `run` lines on stdin with a JSON line on stdout."""
    import rlm_sandbox
    from rlm_sandbox.dspy import SandboxInterpreter

    interpreter_pool = SandboxInterpreter.pool(3, runtime=runtime)
    run_pool = rlm_sandbox.Pool(3, runtime=runtime)
    try:
        for line in sys.stdin:
            op = line.strip()
            if op == "full":
                ok = interpreter_pool.wait_full(timeout=600) and run_pool.wait_full(timeout=600)
                print(json.dumps({"full": bool(ok)}), flush=True)
            elif op == "tti":
                t = time.perf_counter_ns()
                it = SandboxInterpreter(pool=interpreter_pool)
                it.start()
                out = it.execute("print(40 + 2)")
                ns = time.perf_counter_ns() - t
                assert out == "42", out
                it.shutdown()
                drain(interpreter_pool)
                print(json.dumps({"ns": ns}), flush=True)
            elif op == "tti_input":
                t = time.perf_counter_ns()
                it = SandboxInterpreter(pool=interpreter_pool, tools={"lookup": lambda key: key})
                it.start()
                out = it.execute("print(q)", {"q": "forty-two"})
                ns = time.perf_counter_ns() - t
                assert out == "forty-two", out
                it.shutdown()
                drain(interpreter_pool)
                print(json.dumps({"ns": ns}), flush=True)
            elif op == "run":
                t = time.perf_counter_ns()
                result = run_pool.run("print(40 + 2)")
                ns = time.perf_counter_ns() - t
                assert result.stdout == "42\n", result
                drain(run_pool)
                print(json.dumps({"ns": ns}), flush=True)
            else:
                break
    finally:
        interpreter_pool.close()
        run_pool.close()


class Worker:
    def __init__(self, runtime: str, python_dir: str, binary: str, cache: str) -> None:
        env = dict(os.environ, PYTHONPATH=python_dir, RLM_SANDBOX_BIN=binary, RLM_CACHE_DIR=cache)
        self.proc = subprocess.Popen([sys.executable, str(HERE), "--worker", runtime], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, op: str) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(op + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker ended (status {self.proc.wait()})")
        answer: Dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=600)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2])
    runtime, n, old_python, old_bin, old_cache = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
    new_cache = sys.argv[6] if len(sys.argv) > 6 else os.environ["RLM_CACHE_DIR"]
    new_bin = os.environ.get("RLM_SANDBOX_BIN") or str(HERE.parent.parent / "target/release/rlm-sandbox")
    trees: Dict[str, Tuple[str, str, str]] = {
        "older": (old_python, old_bin, old_cache),
        "this": (str(HERE.parent.parent / "python"), new_bin, new_cache),
    }
    workers = {name: Worker(runtime, *tree) for name, tree in trees.items()}
    ops = ("tti", "tti_input", "run")
    times: Dict[str, Dict[str, List[int]]] = {name: {op: [] for op in ops} for name in trees}

    idle = float(os.environ.get("RLM_BENCH_IDLE_S", "0"))

    def full() -> None:
        for w in workers.values():
            assert w.ask("full")["full"]
        time.sleep(idle)

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    try:
        for _ in range(n):
            for op in ops:
                for name in random.sample(list(workers), len(workers)):
                    full()
                    times[name][op].append(workers[name].ask(op)["ns"])
    finally:
        for w in workers.values():
            w.close()
    med = statistics.median
    for name in trees:
        row = times[name]
        print(f"{runtime} {name:5s} " + " | ".join(
            f"{op} p50 {med(row[op]) / 1e6:.3f} p99 {p99(row[op]):.3f} ms" for op in ops))
    old, new = times["older"], times["this"]
    print(f"{runtime} older/this p50: " + ", ".join(f"{op} {med(old[op]) / med(new[op]):.2f}x" for op in ops)
          + f" (n={n}, idle {idle:g} s, load after {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
