"""The watchdog's reaction time: from a SIGKILL of `rlm-sandbox run` to
nothing of its run being left (run directory, cgroups, processes naming
the run), per runtime.

Each round starts a run whose code first holds 96 MiB (so the host sees in
the run's cgroup that the code is running, as tests/common/mod.rs's
wait_for_code does), kills the driver with SIGKILL, and polls every 2 ms
until nothing of the run is left. Prints the median, p90 and max.

    python3 scripts/bench_watchdog.py target/release/rlm-sandbox [ROUNDS]
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

MARK = "_started = b'\\x01' * (96 << 20)\nimport time\ntime.sleep(600)\n"
STARTED_BYTES = 80 << 20


def cgroup_mounts() -> List[Path]:
    with open("/proc/self/mountinfo") as f:
        return [Path(l.split()[4]) for l in f if " - cgroup " in l or " - cgroup2 " in l]


def run_cgroups(prefix: str) -> List[Path]:
    found = []
    for mount in cgroup_mounts():
        parent = mount / "rlm-sandbox"
        try:
            found += [p for p in parent.iterdir() if p.name.startswith(prefix)]
        except OSError:
            pass
    return found


def memory_used(prefix: str) -> int:
    for cg in run_cgroups(prefix):
        for name in ("memory.current", "memory.usage_in_bytes"):
            try:
                return int((cg / name).read_text())
            except (OSError, ValueError):
                continue
    return 0


def processes_naming(prefix: str) -> bool:
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        try:
            if prefix.encode() in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def left(state: Path, prefix: str) -> bool:
    return (
        any(p.name.startswith(prefix) for p in state.iterdir())
        or bool(run_cgroups(prefix))
        or processes_naming(prefix)
    )


def one(binary: str, runtime: str, state: Path) -> float:
    env = dict(os.environ, RLM_STATE_DIR=str(state))
    child = subprocess.Popen(
        [binary, "run", "--runtime", runtime, "--timeout", "600", "-c", MARK],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    prefix = f"rlms-{child.pid}-"
    deadline = time.monotonic() + 120
    while memory_used(prefix) < STARTED_BYTES:
        if time.monotonic() > deadline or child.poll() is not None:
            child.kill()
            raise SystemExit(f"{runtime}: the run's code never started")
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    killed = time.perf_counter()
    child.wait()
    while left(state, prefix):
        if time.perf_counter() - killed > 60:
            raise SystemExit(f"{runtime}: still there 60 s after the driver's SIGKILL")
        time.sleep(0.002)
    return (time.perf_counter() - killed) * 1000


def main() -> None:
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    for runtime in ("runsc", "runc"):
        if subprocess.run(["sh", "-c", f"command -v {runtime}"], capture_output=True).returncode != 0:
            print(f"{runtime}: not installed, skipped")
            continue
        with tempfile.TemporaryDirectory(prefix="rlm-bench-watchdog-") as d:
            times = sorted(one(binary, runtime, Path(d)) for _ in range(rounds))
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        print(
            f"{runtime:6} SIGKILL of the driver -> nothing left: median {statistics.median(times):.0f} ms, "
            f"p90 {p90:.0f} ms, max {times[-1]:.0f} ms (n={rounds})"
        )


if __name__ == "__main__":
    main()
