"""What `rlm-sandbox run` costs by itself: the driver with no runtime.

Why: a cold run's ratio to the raw runtime (scripts/bench) mixes the
driver's own work with the runtime's, whose time drifts by milliseconds
from run to run on a shared machine. Here the runtime is `/bin/true`
(`--runtime runc --runc-path /bin/true`), so everything else a run does is
timed: the binary's start and exit, configuration, rootfs check, the run's
directory, watchdog, cgroup (made and removed in every hierarchy), bundle,
counters and cleanup. `/bin/true` alone is timed beside it (the cost of
starting any process from here), and, given, an older rlm-sandbox binary
too (a before/after in one run). The commands take turns in a shuffled
order each round; prints medians and p90s, and the driver's cost net of
`/bin/true`.

Usage: python3 scripts/bench_driver.py BINARY [ROUNDS] [OLDER_BINARY]
(as root, like any run).
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from typing import Dict, List


def timed(argv: List[str]) -> float:
    """One command's wall time, in milliseconds."""
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def driver(binary: str) -> List[str]:
    return [binary, "run", "--runtime", "runc", "--runc-path", "/bin/true", "-c", "print(1)"]


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    commands: Dict[str, List[str]] = {"/bin/true": ["/bin/true"], "rlm-sandbox": driver(binary)}
    if len(sys.argv) > 3:
        commands["older"] = driver(sys.argv[3])
    times: Dict[str, List[float]] = {name: [] for name in commands}
    order = list(commands)
    rng = random.Random(11)
    for i in range(rounds + 5):
        rng.shuffle(order)
        for name in order:
            t = timed(commands[name])
            if i >= 5:  # warm-up rounds
                times[name].append(t)
    base = statistics.median(times["/bin/true"])
    for name, ts in times.items():
        p50 = statistics.median(ts)
        p90 = statistics.quantiles(ts, n=10)[-1]
        net = "" if name == "/bin/true" else f"   net of /bin/true {p50 - base:.2f} ms"
        print(f"{name:12} p50 {p50:.2f} ms   p90 {p90:.2f} ms{net}   (n={len(ts)})")
    if "older" in times:
        new = statistics.median(times["rlm-sandbox"]) - base
        old = statistics.median(times["older"]) - base
        print(f"driver's own cost, older/this: {old:.2f} / {new:.2f} ms = {old / new:.2f}x")


if __name__ == "__main__":
    main()
