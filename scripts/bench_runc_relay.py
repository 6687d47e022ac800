#!/usr/bin/env python3
"""A round trip into an idle runc container: through runc's stdio relay
against descriptors passed past it (`--preserve-fds`), in one run.

`runc run` without a terminal and not detached gives its container pipes
of its own and copies them to and from its stdio in goroutines: a frame
to the container wakes runc first, then the container, and the same on
the way back. A session's agent under runc therefore gets its channel on
fds 3 and 4 instead (src/supervise/launch.rs, RuntimeKind::relays_stdio).
This starts the same echo loop (python3 in rlm-sandbox's rootfs) in two
containers, one reading stdin and writing stdout through the relay, one
on fds 3 and 4 passed with `--preserve-fds 2`, and times N one-byte round
trips into each, back to back and after a 2 ms idle gap (a cell follows
such a gap: the host's own work, a model's think time). Prints medians
and p99 (us) and relay/direct ratios.

Usage: scripts/bench_runc_relay.py [N] [ROOTFS]   (as root; ROOTFS defaults
to /var/cache/rlm-sandbox/rootfs, made by `rlm-sandbox rootfs build`)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Tuple

ECHO = "import os\nwhile True:\n d = os.read({i}, 64)\n if not d: break\n os.write({o}, d)\n"
GAP_S = 0.002


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bundle(root: str, rootfs: str, fds: Tuple[int, int]) -> str:
    """A bundle from `runc spec`, read-only rootfs, running the echo loop."""
    os.makedirs(root)
    subprocess.run(["runc", "spec", "--bundle", root], check=True)
    path = os.path.join(root, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["root"] = {"path": rootfs, "readonly": True}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/usr/bin/python3", "-I", "-c", ECHO.format(i=fds[0], o=fds[1])]
    with open(path, "w") as f:
        json.dump(config, f)
    return root


def times(write: int, read: int, n: int) -> Tuple[List[float], List[float]]:
    """n round trips back to back, then n after an idle gap each (us)."""

    def trip() -> float:
        t = time.perf_counter()
        os.write(write, b"x")
        if os.read(read, 64) != b"x":
            raise RuntimeError("the echo loop answered something else")
        return (time.perf_counter() - t) * 1e6

    back = [trip() for _ in range(n)]
    idle = []
    for _ in range(n):
        time.sleep(GAP_S)
        idle.append(trip())
    return back, idle


def run(root: str, rootfs: str, name: str, direct: bool, n: int) -> Tuple[List[float], List[float]]:
    """Starts the container, times it, ends it (stdin/fd 3 closed) and deletes it."""
    d = bundle(os.path.join(root, name), rootfs, (3, 4) if direct else (0, 1))
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    argv = ["runc", "--root", os.path.join(root, "state"), "run"]
    preexec: Callable[[], None] | None = None
    if direct:
        argv += ["--preserve-fds", "2"]

        def preexec() -> None:
            # Both off 3 and 4 before the dup2s; close_fds=False below, as
            # subprocess would close 3 and 4 after this runs.
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        child = subprocess.Popen(argv + ["--bundle", d, name], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, preexec_fn=preexec, close_fds=False)
    else:
        child = subprocess.Popen(argv + ["--bundle", d, name], stdin=to_r, stdout=from_w)
    os.close(to_r)
    os.close(from_w)
    try:
        return times(to_w, from_r, n)
    finally:
        os.close(to_w)
        os.close(from_r)
        if child.wait(timeout=30) != 0:
            raise RuntimeError(f"runc run {name} exited {child.returncode}")
        subprocess.run(["runc", "--root", os.path.join(root, "state"), "delete", "--force", name],
                       check=False, stderr=subprocess.DEVNULL)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rootfs = sys.argv[2] if len(sys.argv) > 2 else "/var/cache/rlm-sandbox/rootfs"
    if shutil.which("runc") is None:
        sys.exit("bench_runc_relay: runc is not on PATH")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    root = tempfile.mkdtemp(prefix="rlm-bench-relay-")
    try:
        relay = run(root, rootfs, f"rlm-bench-relay-{os.getpid()}", False, n)
        direct = run(root, rootfs, f"rlm-bench-direct-{os.getpid()}", True, n)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    m = statistics.median
    for k, what in enumerate(("back to back", f"after {GAP_S * 1e3:g} ms idle")):
        r, d = relay[k], direct[k]
        print(f"round trip {what}: relay p50 {m(r):7.1f} p99 {pct(r, 0.99):7.1f} us | direct p50 {m(d):7.1f}"
              f" p99 {pct(d, 0.99):7.1f} us | relay/direct {m(r) / m(d):.2f}x (n={n})")


if __name__ == "__main__":
    main()
