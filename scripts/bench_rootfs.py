"""Rootfs builds with pandas, and the cost of importing pandas in a session.

Builds, one after the other, into temporary directories (removed at the
end): the rootfs `--with python3-pandas` (Debian 12's pandas 1.5.3) and
the rootfs `--pip pandas` (PyPI's newest wheels). Prints each build's wall
time (downloads included: every build fetches its packages again), the
manifest's file count and bytes, and the number of statements given an
inert stand-in. Then, for each rootfs and runtime, starts SESSIONS
sessions one after another and times, in each, the first cell `import
pandas` (request written to reply read) and a second cell that imports it
again (already in sys.modules). The first session after a build is the
coldest (the tree's files not yet in the host's page cache); the median
over the others is the usual case of a session started on a host that has
used the rootfs before.

Usage (as root): python3 scripts/bench_rootfs.py BIN [SESSIONS]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

Message = dict[str, Any]


def build(bin_path: str, args: list[str], output: Path) -> tuple[float, Message]:
    """Builds a rootfs; its wall time in seconds and its manifest."""
    start = time.monotonic()
    done = subprocess.run(
        [bin_path, "rootfs", "build", *args, "--output", str(output), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False,
    )
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit("build %s failed: %s" % (args, done.stderr[-2000:]))
    manifest: Message = json.loads(done.stdout)
    return elapsed, manifest


class Session:
    """One `rlm-sandbox session` process driven over its JSON lines."""

    def __init__(self, bin_path: str, runtime: str, rootfs: Path) -> None:
        self.proc = subprocess.Popen(
            [bin_path, "session", "--runtime", runtime, "--rootfs", str(rootfs), "--memory", "1g"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.next_id = 1
        ready = self.read()
        if ready.get("event") != "ready":
            raise SystemExit("no ready event: %r" % ready)

    def read(self) -> Message:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise SystemExit("the session ended")
        message: Message = json.loads(line)
        return message

    def exec_ms(self, code: str) -> float:
        """Runs a cell; its round trip in ms (it must succeed)."""
        request_id = self.next_id
        self.next_id += 1
        stdin = self.proc.stdin
        assert stdin is not None
        start = time.perf_counter()
        stdin.write(json.dumps({"id": request_id, "op": "exec", "code": code}) + "\n")
        stdin.flush()
        while True:
            message = self.read()
            if message.get("id") == request_id:
                break
        elapsed = (time.perf_counter() - start) * 1000
        cell = message.get("cell") or {}
        if not message.get("ok") or cell.get("status") != "ok":
            raise SystemExit("cell failed: %r" % message)
        return elapsed

    def close(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"id": 0, "op": "close"}) + "\n")
        stdin.flush()
        stdin.close()
        self.proc.wait(timeout=60)


def import_costs(bin_path: str, runtime: str, rootfs: Path, sessions: int) -> tuple[list[float], list[float]]:
    """First and repeated `import pandas` cells, one of each per session."""
    first, again = [], []
    for _ in range(sessions):
        session = Session(bin_path, runtime, rootfs)
        try:
            first.append(session.exec_ms("import pandas"))
            again.append(session.exec_ms("import pandas"))
        finally:
            session.close()
    return first, again


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    bin_path = sys.argv[1]
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    with tempfile.TemporaryDirectory(prefix="rlm-bench-rootfs-") as scratch:
        for label, args in (
            ("--with python3-pandas", ["--with", "python3-pandas"]),
            ("--pip pandas", ["--pip", "pandas"]),
        ):
            output = Path(scratch) / label.replace(" ", "_").replace("-", "")
            seconds, manifest = build(bin_path, args, output)
            versions = [w["name"] + " " + w["version"] for w in manifest.get("wheels", [])]
            versions += [p["name"] + " " + p["version"] for p in manifest["packages"]
                         if p["name"] in ("python3-pandas", "python3-numpy")]
            print("%-22s build %5.1f s, %d packages, %d files, %d MB, %d stand-in statements; %s"
                  % (label, seconds, len(manifest["packages"]), manifest["files"],
                     manifest["bytes"] // 1_000_000, len(manifest.get("stand_ins", [])),
                     ", ".join(sorted(versions))))
            for runtime in ("runsc", "runc"):
                first, again = import_costs(bin_path, runtime, output, sessions)
                print("%-22s %-5s import pandas: first session %6.0f ms, later sessions median %6.0f ms"
                      " (min %4.0f, max %4.0f); again in the same session median %5.2f ms"
                      % (label, runtime, first[0], statistics.median(first[1:] or first),
                         min(first[1:] or first), max(first[1:] or first), statistics.median(again)))
            # The next build must not find this one's tree in the page cache.
            subprocess.run(["rm", "-rf", str(output)], check=True)


if __name__ == "__main__":
    main()
