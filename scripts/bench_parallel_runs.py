#!/usr/bin/env python3
"""One-shot runs per second with several `rlm-sandbox run` at once (an
evaluation's workers), the forked watchdog against the exec'd one, in
one run.

Since 2026-12-07 `run` forks its watchdog at its start instead of
exec'ing the 10 MB binary again (src/supervise/watchdog.rs): less CPU
per run, which a single run on an idle machine does not show (the
exec ran on the other core) but runs at once on 2 cores do. The exec'd
watchdog is the same binary with RLM_SANDBOX_BIN naming a copy of it
(the documented way to get another binary's watchdog). Each round runs
WORKERS loops of PER runs of `print(1)` at once for each variant, in a
shuffled order; prints the median runs/s per variant and their ratio.

Usage (as root): scripts/bench_parallel_runs.py RUNTIME [ROUNDS] [WORKERS] [PER]
(defaults 8 rounds, 4 workers, 6 runs each; the binary is
RLM_SANDBOX_BIN, else target/release/rlm-sandbox).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve()


def main() -> None:
    runtime = sys.argv[1]
    rounds, workers, per = (int(a) for a in sys.argv[2:5] + ["8", "4", "6"][len(sys.argv[2:5]):])
    binary = os.environ.get("RLM_SANDBOX_BIN") or str(HERE.parent.parent / "target/release/rlm-sandbox")
    work = Path(tempfile.mkdtemp(prefix="rlm-bench-parallel-"))
    try:
        copy = work / "rlm-sandbox"
        shutil.copy2(binary, copy)
        env = {k: v for k, v in os.environ.items() if k != "RLM_SANDBOX_BIN"}
        variants: Dict[str, Dict[str, str]] = {
            "forked watchdog": env,
            "exec'd watchdog": dict(env, RLM_SANDBOX_BIN=str(copy)),
        }
        argv = [binary, "run", "--runtime", runtime, "-c", "print(1)"]

        def loop(variant_env: Dict[str, str]) -> None:
            for _ in range(per):
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                               env=variant_env)

        rates: Dict[str, List[float]] = {name: [] for name in variants}
        rng = random.Random(3)
        loop(env)  # warm-up
        for _ in range(rounds):
            names = list(variants)
            rng.shuffle(names)
            for name in names:
                t = time.perf_counter()
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(loop, [variants[name]] * workers))
                rates[name].append(workers * per / (time.perf_counter() - t))
    finally:
        shutil.rmtree(work)
    med = {name: statistics.median(xs) for name, xs in rates.items()}
    for name in variants:
        print(f"{runtime} {name}: {med[name]:.2f} runs/s (median of {rounds} rounds, {workers} at once, "
              f"{per} runs each)")
    ratio = med["forked watchdog"] / med["exec'd watchdog"]
    print(f"{runtime} forked/exec'd runs/s: {ratio:.3f}")


if __name__ == "__main__":
    main()
