#!/usr/bin/env python3
"""Claim of a standby vs a cold start, per runtime: `session --standby`
then `begin` (a context and a tool) against `session --context --tool`.

Prints, per runtime, the p50 and p90 of the standby's `claim_ms` (begin
to ready, measured by the session), the begin-to-ready time the client
sees (one JSON line out, one in), and the cold session's `startup_ms`,
with cold / claim as a ratio. Usage: scripts/bench_standby.py [N]
(RLM_SANDBOX_BIN, RLM_STATE_DIR and RLM_CACHE_DIR as for the tests).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("RLM_SANDBOX_BIN", "target/release/rlm-sandbox")


def session(runtime: str, flags: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([BIN, "session", "--runtime", runtime, *flags], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)


def close(p: subprocess.Popen[str]) -> None:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write('{"id": 99, "op": "close"}\n')
    p.stdin.flush()
    p.stdout.readline()
    p.stdin.close()
    assert p.wait(30) == 0


def standby(runtime: str, ctx: str) -> tuple[float, float, int]:
    """(claim_ms, client begin-to-ready ms, standby startup_ms)."""
    p = session(runtime, ["--standby"])
    assert p.stdin is not None and p.stdout is not None
    first = json.loads(p.stdout.readline())
    assert first["event"] == "standby", first
    begin = {"id": 1, "op": "begin", "args": ["--context", ctx, "--tool", "lookup:key"]}
    t0 = time.perf_counter()
    p.stdin.write(json.dumps(begin) + "\n")
    p.stdin.flush()
    ready = json.loads(p.stdout.readline())
    seen = (time.perf_counter() - t0) * 1000
    assert ready["event"] == "ready" and ready["standby"], ready
    close(p)
    return ready["claim_ms"], seen, first["startup_ms"]


def cold(runtime: str, ctx: str) -> int:
    p = session(runtime, ["--context", ctx, "--tool", "lookup:key"])
    assert p.stdout is not None
    ready = json.loads(p.stdout.readline())
    assert ready["event"] == "ready", ready
    close(p)
    return int(ready["startup_ms"])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        ctx = os.path.join(d, "context.txt")
        with open(ctx, "w") as f:
            f.write("a line of the context\n" * 1000)
        os.chmod(ctx, 0o644)
        for runtime in ("runc", "runsc"):
            claims: list[float] = []
            seen: list[float] = []
            starts: list[float] = []
            colds: list[float] = []
            for _ in range(n):
                c, s, st = standby(runtime, ctx)
                claims.append(c)
                seen.append(s)
                starts.append(st)
                colds.append(cold(runtime, ctx))
            claim50, cold50 = statistics.median(claims), statistics.median(colds)
            print(f"{runtime}: n={n} claim_ms p50 {claim50:.3f} p90 {pct(claims, 0.9):.3f} | "
                  f"client begin->ready p50 {statistics.median(seen):.3f} p90 {pct(seen, 0.9):.3f} | "
                  f"standby startup_ms p50 {statistics.median(starts):.0f} | "
                  f"cold startup_ms p50 {cold50:.0f} p90 {pct(colds, 0.9):.0f} | "
                  f"cold/claim {cold50 / claim50:.0f}x")


if __name__ == "__main__":
    main()
