"""Session round trips against a cold one-shot run, per runtime, in one run.

For each runtime: starts `rlm-sandbox session`, times CELLS `print(1)` cells
(request written to the reply read, as an orchestrator sees them) and, in
blocks between them, COLD_RUNS cold `rlm-sandbox run -c 'print(1)'` of the
same code; then `llm_query` calls answered at once by this script (timed in
the sandbox, from the call to its answer) and the session process's RSS.
Prints p50 and p99 and the ratio cold/cell.

Usage: python3 scripts/bench_session.py BIN [CELLS] [COLD_RUNS]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from typing import IO, Any

Message = dict[str, Any]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank (q in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Session:
    """One `rlm-sandbox session` process driven over its JSON lines."""

    def __init__(self, bin_path: str, runtime: str) -> None:
        self.proc = subprocess.Popen(
            [bin_path, "session", "--runtime", runtime],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.ready = self._line()
        if self.ready.get("event") != "ready":
            raise SystemExit("session did not start: %r" % self.ready)
        self.next_id = 0

    def _line(self) -> Message:
        out: IO[str] = self.proc.stdout  # type: ignore[assignment]
        line = out.readline()
        if not line:
            raise SystemExit("the session ended")
        msg: Message = json.loads(line)
        return msg

    def _send(self, msg: Message) -> None:
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        stdin.write(json.dumps(msg) + "\n")
        stdin.flush()

    def exec(self, code: str) -> Message:
        """Runs a cell, answering its calls with "ok"; returns the response."""
        self.next_id += 1
        self._send({"id": self.next_id, "op": "exec", "code": code})
        while True:
            msg = self._line()
            if msg.get("event") == "call":
                self._send({"op": "call_result", "call": msg["call"],
                            "results": ["ok"] * len(msg["prompts"])})
                continue
            if msg.get("id") != self.next_id or not msg.get("ok"):
                raise SystemExit("unexpected reply: %r" % msg)
            return msg

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the session process, KiB."""
        fields: dict[str, int] = {}
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def close(self) -> None:
        self._send({"id": "close", "op": "close"})
        self._line()
        self.proc.wait(timeout=30)


def timed(f: Any) -> float:
    started = time.perf_counter()
    f()
    return (time.perf_counter() - started) * 1000


def bench(bin_path: str, runtime: str, cells: int, cold_runs: int) -> None:
    cold_cmd = [bin_path, "run", "--runtime", runtime, "-c", "print(1)"]

    def cold() -> None:
        subprocess.run(cold_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    session = Session(bin_path, runtime)
    try:
        for _ in range(20):  # warm-up
            session.exec("print(1)")
        cold()
        t_cell: list[float] = []
        t_cold: list[float] = []
        # Blocks of cells and cold runs in turn, so drift hits both alike;
        # a pause after each cold run lets its teardown (runtime processes
        # exiting, cgroup removal) finish before cells are timed again.
        for block in range(cold_runs):
            for _ in range(cells // cold_runs):
                t_cell.append(timed(lambda: session.exec("print(1)")))
            t_cold.append(timed(cold))
            time.sleep(0.3)
        # Timed inside the sandbox: from the code's call to its answer.
        calls = max(100, cells // 5)
        reply = session.exec(
            "import time\nts = []\nfor _ in range(%d):\n"
            "    t = time.perf_counter()\n    llm_query('hi')\n"
            "    ts.append((time.perf_counter() - t) * 1000)\n"
            "print(' '.join('%%.4f' %% x for x in ts))" % calls)
        t_call = [float(x) for x in reply["cell"]["stdout"].split()]
        rss, hwm = session.rss_kib()
    finally:
        session.close()
    p50, p99 = statistics.median(t_cell), percentile(t_cell, 99)
    cold50 = statistics.median(t_cold)
    call50, call99 = statistics.median(t_call), percentile(t_call, 99)
    print("%-6s session start %5.0f ms | cell print(1) p50 %.3f ms p99 %.3f ms (n=%d) | "
          "cold run p50 %.1f ms (n=%d) | cold/cell %.0fx"
          % (runtime, session.ready["startup_ms"], p50, p99, cells, cold50, len(t_cold), cold50 / p50))
    print("%-6s llm_query round trip p50 %.3f ms p99 %.3f ms (in the sandbox, n=%d) | "
          "session process RSS %.1f MiB (peak %.1f MiB)"
          % (runtime, call50, call99, len(t_call), rss / 1024, hwm / 1024))


def main() -> None:
    bin_path = sys.argv[1]
    cells = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    cold_runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    for runtime in ("runsc", "runc"):
        if shutil.which(runtime) is None:
            print("%s: not installed, skipped" % runtime)
            continue
        bench(bin_path, runtime, cells, cold_runs)


if __name__ == "__main__":
    main()
