#!/usr/bin/env python3
"""rlm_sandbox.Pool against cold starts, both runtimes in one run.

Per runtime, medians and p99 (ms) of:
- time to interactive through SandboxInterpreter, as DSPy uses it
  (construct + start + first `execute("print(40 + 2)")`), pooled
  (`SandboxInterpreter(pool=pool)`, the pool full before each), from the
  interpreter's own pool (`SandboxInterpreter.pool()`: the setup ran in
  each standby before its claim; also claimed after the machine was idle
  for IDLE_S, as a task's claim comes after the model's answer, not right
  after the pool's refill woke every process) and cold; and, after idle,
  dspy.RLM's own first step: a tool registered and a step that binds an
  input (`execute("print(q)", {"q": ...})`: RLM's first step installs
  DSPy's facade with a variable, its tools registered);
- a one-shot run of `print(40 + 2)`: `pool.run` against `rlm_sandbox.run`
  (`rlm-sandbox run --json`);
- a warm step, `execute("print(6 * 7)")` on a started SandboxInterpreter;
- host memory per idle pooled sandbox: the PSS of the standby's
  `rlm-sandbox session` process, every process naming its run id (the
  runtime's and the watchdog) and every process in the run's cgroup (the
  agent under runc; runsc's sandbox), and the run's cgroup memory.current (the sandbox's own charge; it
  overlaps the PSS of the processes inside it, so the two are shown
  side by side, never added);
- refill rate: standbys per second after draining a pool of 8 (drain, then
  wait until it is full again; the drained sandboxes are removed meanwhile).
Prints pooled/cold ratios. Usage: scripts/bench_pool.py [N] (RLM_SANDBOX_BIN,
RLM_STATE_DIR, RLM_CACHE_DIR as for the tests; PYTHONPATH=python).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import rlm_sandbox
from rlm_sandbox import Pool
from rlm_sandbox.dspy import SandboxInterpreter


#: The idle gap before each sample of the "after idle" TTI row.
IDLE_S = 0.2


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def show(name: str, xs: List[float]) -> str:
    return f"{name} p50 {statistics.median(xs):8.3f} p99 {pct(xs, 0.99):8.3f} (n={len(xs)})"


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def tti(pool: Pool | None, runtime: str) -> float:
    """construct + start + first execute; the shutdown is not timed."""
    t = time.perf_counter()
    interp = SandboxInterpreter(pool=pool) if pool is not None else SandboxInterpreter(runtime=runtime)
    interp.start()
    out = interp.execute("print(40 + 2)")
    ms = (time.perf_counter() - t) * 1000
    assert out == "42", out
    interp.shutdown()
    return ms


def tti_rlm(pool: Pool) -> float:
    """tti with dspy.RLM's first step: a tool, an input bound."""
    t = time.perf_counter()
    interp = SandboxInterpreter(pool=pool, tools={"lookup": lambda key: key})
    interp.start()
    out = interp.execute("print(q)", {"q": "forty-two"})
    ms = (time.perf_counter() - t) * 1000
    assert out == "forty-two", out
    interp.shutdown()
    return ms


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_pids(text: str) -> List[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def run_cgroups(prefix: str) -> List[Path]:
    groups = []
    for root in (Path("/sys/fs/cgroup/rlm-sandbox"), Path("/sys/fs/cgroup/memory/rlm-sandbox")):
        if root.is_dir():
            groups += [g for g in root.iterdir() if g.name.startswith(prefix)]
    return groups


def cgroup_bytes(prefix: str) -> int:
    total = 0
    for group in run_cgroups(prefix):
        for name in ("memory.current", "memory.usage_in_bytes"):
            f = group / name
            if f.exists():
                total += int(f.read_text())
                break
    return total


def cgroup_pids(prefix: str) -> List[int]:
    pids = []
    for group in run_cgroups(prefix):
        for f in group.rglob("cgroup.procs"):
            pids += [int(p) for p in f.read_text().split()]
    return pids


def memory(pool: Pool) -> Dict[str, float]:
    keeper = pool._keeper
    assert keeper is not None
    with keeper.cond:
        pids = [p.pid for p in keeper.ready]
    pss, cg = [], []
    for pid in pids:
        prefix = f"rlms-{pid}-"
        procs = {pid, *run_pids(prefix), *cgroup_pids(prefix)}
        pss.append(sum(pss_kib(p) for p in procs) / 1024)
        cg.append(cgroup_bytes(prefix) / 2**20)
    return {"pss": statistics.median(pss), "cgroup": statistics.median(cg)}


def refill_rate(runtime: str, size: int = 8) -> float:
    with Pool(size, runtime=runtime) as pool:
        assert pool.wait_full()
        keeper = pool._keeper
        assert keeper is not None
        t = time.perf_counter()
        drained = [keeper.take() for _ in range(size)]
        for process in drained:
            assert process is not None
            process.end_input()  # removed while the pool refills, as after real claims
        assert pool.wait_full()
        elapsed = time.perf_counter() - t
        for process in drained:
            if process is not None:
                process.terminate(10)
    return size / elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    cold_n = max(10, n // 3)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for runtime in ("runc", "runsc"):
        with Pool(4, runtime=runtime) as pool:
            assert pool.wait_full()
            pooled_tti = []
            for _ in range(n):
                pool.wait_full()
                pooled_tti.append(tti(pool, runtime))
            cold_tti = [tti(None, runtime) for _ in range(cold_n)]
            pooled_run = []
            for _ in range(n):
                pool.wait_full()
                pooled_run.append(timed(lambda: pool.run("print(40 + 2)")))
            cold_run = [timed(lambda: rlm_sandbox.run("print(40 + 2)", runtime=runtime)) for _ in range(cold_n)]
            pool.wait_full()
            with SandboxInterpreter(pool=pool) as interp:
                interp.execute("print(1)")
                warm = [timed(lambda: interp.execute("print(6 * 7)")) for _ in range(max(200, 4 * n))]
            pool.wait_full()
            mem = memory(pool)
        # The interpreter's own pool: its standbys ran the setup (a prelude).
        with SandboxInterpreter.pool(4, runtime=runtime) as pool:
            assert pool.wait_full()
            prelude_tti, idle_tti, rlm_tti = [], [], []
            for _ in range(n):
                pool.wait_full()
                prelude_tti.append(tti(pool, runtime))
            # The same after the machine was idle: a task's sandbox is
            # claimed after the model answered, not right after a refill.
            for _ in range(n):
                pool.wait_full()
                time.sleep(IDLE_S)
                idle_tti.append(tti(pool, runtime))
            for _ in range(n):
                pool.wait_full()
                time.sleep(IDLE_S)
                rlm_tti.append(tti_rlm(pool))
        rate = refill_rate(runtime)
        m = statistics.median
        print(f"{runtime}:")
        print("  tti  pooled " + show("", pooled_tti) + " | cold " + show("", cold_tti)
              + f" | pooled/cold {m(pooled_tti) / m(cold_tti):.4f}")
        print("  tti  SandboxInterpreter.pool() " + show("", prelude_tti)
              + f" | /cold {m(prelude_tti) / m(cold_tti):.4f}")
        print(f"  tti  SandboxInterpreter.pool(), claimed after {IDLE_S:g} s idle " + show("", idle_tti))
        print(f"  tti  the same, dspy.RLM's first step (a tool, an input) " + show("", rlm_tti))
        print("  run  pooled " + show("", pooled_run) + " | cold " + show("", cold_run)
              + f" | pooled/cold {m(pooled_run) / m(cold_run):.4f}")
        print("  warm step " + show("", warm))
        print(f"  idle pooled sandbox: PSS (session + runtime processes) {mem['pss']:.1f} MiB,"
              f" cgroup memory.current {mem['cgroup']:.1f} MiB")
        print(f"  refill: {rate:.2f} standbys/s (pool of 8 drained)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
