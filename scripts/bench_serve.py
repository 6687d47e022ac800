#!/usr/bin/env python3
"""`rlm-sandbox serve` against the raw runtime, both runtimes in one run.

Per runtime:
- one-shot runs per second of `print(1)` at concurrency 1, 8 and 50:
  that many client processes (`rlm-sandbox run --server`) at once through
  one server, against the raw runtime (bench_raw.py: `runc run` /
  `runsc run` on rlm-sandbox's bundle) started with the same parallelism;
  the two alternate per level, and the ratio ours/raw is printed (above 1
  is faster: the server's pool takes the start-up off the request);
- session claim latency through the socket (connect, the opening line,
  the `ready` event; p50, p99), beside a cold `rlm-sandbox session`'s
  start to `ready`;
- the server's RSS and PSS idle (its pool full, no client) and its peak
  under the load above (VmHWM, and the largest PSS sampled);
- host memory per live sandbox: with 8 sessions open through a server
  without a pool, per run the PSS of its runtime processes and of every
  process in its cgroup, plus its watchdog, and the run's cgroup
  memory.current (overlapping the PSS, so shown beside it, never added),
  and what the server itself grew by per live session.
Usage: scripts/bench_serve.py [RUNS_PER_CLIENT] [CLAIMS] (RLM_SANDBOX_BIN,
RLM_STATE_DIR, RLM_CACHE_DIR as for the tests; PYTHONPATH=python for the
memory helpers shared with bench_pool.py).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pool import cgroup_bytes, cgroup_pids, pct, pss_kib, run_cgroups, run_pids  # noqa: E402
from bench_raw import Raw  # noqa: E402

CODE = "print(1)"
LEVELS = (1, 8, 50)
POOL = 8
LIVE_FOR_MEMORY = 8


class Server:
    """A `serve --json` process and its log; ended by SIGTERM."""

    def __init__(self, ours: str, runtime: str, sock: Path, pool: int) -> None:
        self.sock = str(sock)
        self.proc = subprocess.Popen(
            [ours, "serve", "--json", "--socket", self.sock, "--runtime", runtime,
             "--pool-size", str(pool), "--pool-max", str(max(2 * pool, 1)), "--max-live", "64",
             "--max-waiting", "128", "--max-memory", "64g", "--wait", "600"],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if json.loads(line).get("event") == "listening":
                break
        else:
            raise SystemExit("the server ended before listening")
        # Drain the log so the server never blocks on it.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or []], daemon=True).start()

    def request(self, opening: Dict[str, object]) -> Dict[str, object]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(json.dumps(opening).encode() + b"\n")
            answer: Dict[str, object] = json.loads(s.makefile().readline())
            return answer

    def pool_full(self, size: int) -> None:
        """Waits until every pool of the server holds `size` started sandboxes."""
        while True:
            pools = self.request({"op": "stats"})["pools"]
            assert isinstance(pools, dict)
            if pools and all(p["ready"] >= size and p["starting"] == 0 for p in pools.values()):
                return
            time.sleep(0.05)

    def memory_kib(self) -> Tuple[int, int, int]:
        """VmRSS, VmHWM, PSS of the server process."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"], pss_kib(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        if self.proc.wait(timeout=120) != 0:
            raise SystemExit(f"the server exited {self.proc.returncode}")


def throughput(clients: int, runs_each: int, once: Callable[[int], None]) -> float:
    """Runs per second: `clients` threads, each calling once(slot) `runs_each` times."""
    errors: List[BaseException] = []

    def worker(slot: int) -> None:
        try:
            for _ in range(runs_each):
                once(slot)
        except BaseException as e:  # reported after the join
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise errors[0]
    return clients * runs_each / elapsed


def through_server(client: List[str]) -> None:
    """One client process's one-shot run."""
    subprocess.run(client, check=True, stdout=subprocess.DEVNULL)


def claim_ms(server: Server) -> float:
    """Connect, ask for a session, read `ready`: a claim through the socket."""
    with socket.socket(socket.AF_UNIX) as s:
        t = time.perf_counter()
        s.connect(server.sock)
        s.sendall(b'{"op": "session", "args": []}\n')
        f = s.makefile("rwb")
        ready = json.loads(f.readline())
        ms = (time.perf_counter() - t) * 1000
        assert ready.get("event") == "ready", ready
        f.write(b'{"id": 1, "op": "close"}\n')
        f.flush()
        assert json.loads(f.readline()).get("ok") is True
        return ms


def cold_session_ms(ours: str, runtime: str) -> float:
    t = time.perf_counter()
    p = subprocess.Popen([ours, "session", "--runtime", runtime], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdin is not None
    ready = json.loads(p.stdout.readline())
    ms = (time.perf_counter() - t) * 1000
    assert ready.get("event") == "ready", ready
    p.stdin.close()
    p.wait(timeout=60)
    return ms


def watchdogs_of(pid: int) -> List[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == pid and b"__watchdog" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def live_memory(ours: str, runtime: str, work: Path) -> Dict[str, float]:
    """Per live sandbox (median over LIVE_FOR_MEMORY sessions, no pool), MiB."""
    server = Server(ours, runtime, work / f"mem-{runtime}.sock", 0)
    idle_rss = server.memory_kib()[0]
    conns = []
    try:
        for _ in range(LIVE_FOR_MEMORY):
            s = socket.socket(socket.AF_UNIX)
            s.connect(server.sock)
            s.sendall(b'{"op": "session", "args": []}\n')
            f = s.makefile("rwb")
            assert json.loads(f.readline()).get("event") == "ready"
            f.write(b'{"id": 1, "op": "exec", "code": "print(1)"}\n')
            f.flush()
            assert json.loads(f.readline()).get("ok") is True
            conns.append((s, f))
        prefix = f"rlms-{server.proc.pid}-"
        ids = sorted({g.name for g in run_cgroups(prefix)})
        assert len(ids) == LIVE_FOR_MEMORY, ids
        pss = [sum(pss_kib(p) for p in {*run_pids(i), *cgroup_pids(i)}) / 1024 for i in ids]
        cg = [cgroup_bytes(i) / 2**20 for i in ids]
        dogs = [pss_kib(p) / 1024 for p in watchdogs_of(server.proc.pid)]
        grown = (server.memory_kib()[0] - idle_rss) / 1024 / LIVE_FOR_MEMORY
    finally:
        for s, f in conns:
            f.close()
            s.close()
        server.stop()
    return {"pss": statistics.median(pss), "watchdog": statistics.median(dogs),
            "cgroup": statistics.median(cg), "server": grown}


def show(xs: List[float]) -> str:
    return f"p50 {statistics.median(xs):8.3f} p99 {pct(xs, 0.99):8.3f} (n={len(xs)})"


def bench(ours: str, runtime: str, runs_each: int, claims: int, work: Path) -> None:
    raw = Raw(ours, runtime, CODE, work, slots=max(LEVELS))
    server = Server(ours, runtime, work / f"{runtime}.sock", POOL)
    try:
        subprocess.run([ours, "run", "--server", server.sock, "-c", CODE], check=True, stdout=subprocess.DEVNULL)
        server.pool_full(POOL)
        idle = server.memory_kib()
        claim: List[float] = []
        for _ in range(claims):
            server.pool_full(POOL)
            claim.append(claim_ms(server))
        cold = [cold_session_ms(ours, runtime) for _ in range(max(5, claims // 10))]
        client = [ours, "run", "--server", server.sock, "-c", CODE]
        peak_pss = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak_pss[0] = max(peak_pss[0], pss_kib(server.proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rates = []
        for level in LEVELS:
            r_raw = throughput(level, runs_each, raw.once)
            server.pool_full(POOL)
            r_ours = throughput(level, runs_each, lambda _slot: through_server(client))
            rates.append((level, r_raw, r_ours))
        stop.set()
        sampler.join()
        rss, hwm, _ = server.memory_kib()
    finally:
        server.stop()
    mem = live_memory(ours, runtime, work)
    print(f"{runtime}:")
    for level, r_raw, r_ours in rates:
        print(f"  runs/s at {level:2}: serve {r_ours:7.2f} | raw runtime {r_raw:7.2f} | serve/raw "
              f"{r_ours / r_raw:.3f}   ({level} clients x {runs_each} runs, pool {POOL})")
    print(f"  session claim through the socket {show(claim)} ms | cold session {show(cold)} ms | "
          f"claim/cold {statistics.median(claim) / statistics.median(cold):.4f}")
    print(f"  server idle (pool of {POOL} full): VmRSS {idle[0] / 1024:.1f} MiB, PSS {idle[2] / 1024:.1f} MiB"
          f" | under load: VmHWM {hwm / 1024:.1f} MiB, peak PSS {peak_pss[0] / 1024:.1f} MiB,"
          f" VmRSS after {rss / 1024:.1f} MiB")
    print(f"  per live sandbox ({LIVE_FOR_MEMORY} sessions): PSS {mem['pss']:.1f} MiB + watchdog"
          f" {mem['watchdog']:.1f} MiB, cgroup memory.current {mem['cgroup']:.1f} MiB,"
          f" server growth {mem['server']:.2f} MiB")


def main() -> None:
    ours = os.environ.get("RLM_SANDBOX_BIN") or str(Path(__file__).resolve().parent.parent
                                                    / "target/release/rlm-sandbox")
    runs_each = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    claims = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="rlm-bench-serve-") as work:
        for runtime in ("runc", "runsc"):
            bench(ours, runtime, runs_each, claims, Path(work))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    # The raw baseline's runs at 50 at once can leave their bundles'
    # cgroups (rlms-bundle-*) on a hybrid host; gc removes what no live
    # process owns, and says what.
    gc = subprocess.run([ours, "gc", "--json"], capture_output=True, text=True, check=False)
    removed = json.loads(gc.stdout or "{}").get("removed", [])
    print(f"gc after: removed {len(removed)} leftovers {sorted(removed)[:3]}")


if __name__ == "__main__":
    main()
