"""A warm step through DSPy's interpreter against the floor of a round trip
into a started sandbox, per runtime, in one run.

Why: once a sandbox is started, what an RLM pays per step is the step's
round trip (issue 20: p50 <= 0.3 ms on runc, <= 0.5 ms on runsc). No
design can beat the cost of getting bytes into the sandbox and back, so
that is the baseline the step is divided by, measured in the same run on
the same machine:

- floor: the raw runtime (`runc run` / `runsc run`, as scripts/bench runs
  it) on the bundle `rlm-sandbox bundle` writes (same config.json, same
  rootfs, same seccomp), its Python echoing a 64-byte line from stdin to
  stdout; timed from the write to the echo read in this process. One
  wake-up into the sandbox and one out: nothing of ours.
- cell: `rlm_sandbox.Session.exec("print(1)")`, the Python client through
  `rlm-sandbox session` and the agent.
- step: `SandboxInterpreter.execute("print(6 * 7)")` on a started
  interpreter (with one tool registered, as RLM has), as DSPy calls it.
- vstep: the same with the step's variables (`INPUTS`, unchanged from
  step to step), as dspy.RLM calls it: every step passes its inputs.
  Beside it the same step made to take the path before exec's `restore`
  (the interpreter's record of kept inputs cleared before each step, so
  a cell binds them before the step's cell: two round trips).

The three are timed in turns (a block of each, BLOCKS times), so the shared
machine's drift hits them alike. Each block starts with BLOCK_WARMUP
untimed runs of its own: gVisor's systrap turns its spinning fast path on
and off by the latency it measures, so a sandbox left idle while the
other rows ran starts slow, and without them a row that follows another on
the same interpreter (vstep after step) would start hot while step started
cold. Prints p50 and p99 of each and the ratios
to the floor.

Usage: python scripts/bench_interpreter.py [STEPS] [BLOCKS]
(RLM_SANDBOX_BIN names the binary; PYTHONPATH the client, python/.)

Before/after: python scripts/bench_interpreter.py STEPS ab OLD_BIN=OLD_CACHE
times the cell and the step on RLM_SANDBOX_BIN and on OLD_BIN (with its
own RLM_CACHE_DIR, as its agent differs) alternating sample by sample, per
runtime, and prints both with the ratio old/new.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from rlm_sandbox import Session
from rlm_sandbox.binary import find_binary
from rlm_sandbox.dspy import SandboxInterpreter

ECHO_CODE = """
import sys
r, w = sys.stdin.buffer, sys.stdout.buffer
for line in iter(r.readline, b""):
    w.write(line)
    w.flush()
"""
LINE = b"x" * 63 + b"\n"
#: Untimed runs at the start of each block (see the docstring).
BLOCK_WARMUP = 20
#: A DSPy RLM step's variables: the same every step.
INPUTS = {"context": "a few lines of text " * 20, "query": "What is six times seven?"}


def percentile(values: List[float], q: float) -> float:
    """The q-th percentile by nearest rank (q in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Floor:
    """The raw runtime on rlm-sandbox's bundle, echoing lines."""

    def __init__(self, binary: str, runtime: str, work: Path) -> None:
        bundle = work / runtime
        subprocess.run([binary, "bundle", "--runtime", runtime, "--output", str(bundle), "-c", ECHO_CODE],
                       check=True, stdout=subprocess.DEVNULL)
        path = shutil.which(runtime)
        assert path is not None
        argv = [path, "--root", str(work / f"state-{runtime}"), "--log-format", "json"]
        if runtime == "runsc":
            argv += ["--oci-seccomp", "--network=none"]
        argv += ["run", "--bundle", str(bundle), f"rlms-benchint-{os.getpid()}-{runtime}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)

    def once(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(LINE)
        self.proc.stdin.flush()
        if self.proc.stdout.readline() != LINE:
            raise SystemExit("the echo sandbox broke")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def timed(f: Callable[[], object]) -> float:
    started = time.perf_counter()
    f()
    return (time.perf_counter() - started) * 1000


def two_cells(interpreter: SandboxInterpreter) -> object:
    """A step with its inputs as before exec's `restore`: a binding cell first."""
    interpreter._holdings.kept = frozenset()
    return interpreter.execute("print(6 * 7)", INPUTS)


def bench(binary: str, runtime: str, steps: int, blocks: int, work: Path) -> None:
    floor = Floor(binary, runtime, work)
    session = Session(runtime=runtime)
    interpreter = SandboxInterpreter(tools={"lookup": lambda key: key}, runtime=runtime)
    try:
        interpreter.start()
        if interpreter.execute("print(6 * 7)") != "42":
            raise SystemExit("the interpreter's step printed something else")
        runs: Dict[str, Callable[[], object]] = {
            "floor": floor.once,
            "cell": lambda: session.exec("print(1)"),
            "step": lambda: interpreter.execute("print(6 * 7)"),
            "vstep": lambda: interpreter.execute("print(6 * 7)", INPUTS),
            "vstep2": lambda: two_cells(interpreter),
        }
        for run in runs.values():  # warm-up
            for _ in range(50):
                run()
        times: Dict[str, List[float]] = {name: [] for name in runs}
        for _ in range(blocks):
            for name, run in runs.items():
                for _ in range(BLOCK_WARMUP):
                    run()
                times[name].extend(timed(run) for _ in range(steps // blocks))
    finally:
        interpreter.shutdown()
        session.close()
        floor.close()
    p50 = {name: statistics.median(t) for name, t in times.items()}
    p99 = {name: percentile(t, 99) for name, t in times.items()}
    n = len(times["step"])
    print("%-6s floor (echo into the raw runtime's sandbox) p50 %.3f ms p99 %.3f ms | "
          "cell print(1) p50 %.3f ms p99 %.3f ms | SandboxInterpreter step print(6 * 7) p50 %.3f ms p99 %.3f ms | "
          "with its inputs p50 %.3f ms p99 %.3f ms (in two cells, as before: p50 %.3f ms p99 %.3f ms) (n=%d each) | step/floor %.2fx, with inputs/floor %.2fx, "
          "cell/floor %.2fx"
          % (runtime, p50["floor"], p99["floor"], p50["cell"], p99["cell"], p50["step"], p99["step"],
             p50["vstep"], p99["vstep"], p50["vstep2"], p99["vstep2"], n, p50["step"] / p50["floor"], p50["vstep"] / p50["floor"],
             p50["cell"] / p50["floor"]))


def before_after(new: str, old: str, old_cache: str, runtime: str, steps: int) -> None:
    """The cell and the step on two binaries, alternating per sample."""
    subjects: List[Tuple[Session, SandboxInterpreter, Dict[str, List[float]]]] = []
    for binary, env in ((old, {"RLM_CACHE_DIR": old_cache}), (new, {})):
        session = Session(runtime=runtime, binary=binary, env=env)
        interpreter = SandboxInterpreter(tools={"lookup": lambda key: key}, runtime=runtime, binary=binary, env=env)
        interpreter.start()
        subjects.append((session, interpreter, {"cell": [], "step": [], "vstep": []}))
    try:
        for i in range(steps + 100):
            for session, interpreter, times in subjects:
                cell = timed(lambda: session.exec("print(1)"))
                step = timed(lambda: interpreter.execute("print(6 * 7)"))
                vstep = timed(lambda: interpreter.execute("print(6 * 7)", INPUTS))
                if i >= 100:  # after the warm-up
                    times["cell"].append(cell)
                    times["step"].append(step)
                    times["vstep"].append(vstep)
    finally:
        for session, interpreter, _ in subjects:
            interpreter.shutdown()
            session.close()
    (_, _, before), (_, _, after) = subjects
    for name in ("cell", "step", "vstep"):
        b50, a50 = statistics.median(before[name]), statistics.median(after[name])
        print("%-6s %s p50 old %.3f ms new %.3f ms (old/new %.2fx) | p99 old %.3f new %.3f (n=%d each)"
              % (runtime, name, b50, a50, b50 / a50, percentile(before[name], 99), percentile(after[name], 99),
                 steps))


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    binary = find_binary()
    if len(sys.argv) > 3 and sys.argv[2] == "ab":
        old, _, old_cache = sys.argv[3].partition("=")
        for runtime in ("runsc", "runc"):
            if shutil.which(runtime) is not None:
                before_after(binary, old, old_cache, runtime, steps)
        return
    blocks = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    with tempfile.TemporaryDirectory(prefix="rlm-bench-int.") as tmp:
        for runtime in ("runsc", "runc"):
            if shutil.which(runtime) is None:
                print("%s: not installed, skipped" % runtime)
                continue
            bench(binary, runtime, steps, blocks, Path(tmp))


if __name__ == "__main__":
    main()
