"""Per-cell cost of a session whose agent is reached over `podman exec -i`
(`session --agent-command`, the transport a claimed pod uses with
`kubectl exec -i`) against the local session, same runtime, same run.

Setup as tests/podman.rs does it: `rlm-sandbox rootfs image` (an OCI
archive), `podman load` into a private storage root, a container run with
the rendered container's settings (user, read-only root, no capabilities,
no new privileges, memory, /tmp tmpfs, `--network none`) waiting, then the
session's agent exec'd into it. Both sessions are started, and their cells
are timed interleaved in blocks (request written to reply read, as an
orchestrator sees them), so load on the machine falls on both alike.
Prints p50 and p99 per session and the ratio remote/local. Needs root,
podman and the runtime; removes its container, image and storage.

Usage: python3 scripts/bench_remote.py BIN [CELLS] [RUNTIME]
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, List

Message = dict[str, Any]
WAITER = ["/usr/bin/python3", "-I", "-c", "import signal; signal.pause()"]
AGENT = "/usr/bin/python3 -I -B -m _rlm_agent"
BLOCK = 20


def percentile(values: List[float], q: float) -> float:
    """The q-th percentile by nearest rank (q in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def check(argv: List[str], env: dict[str, str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {out.returncode}: {out.stderr}")
    return out.stdout


class Session:
    """One `rlm-sandbox session` process driven over its JSON lines."""

    def __init__(self, argv: List[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
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

    def cell(self, code: str) -> float:
        """One cell's round trip in ms."""
        self.next_id += 1
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        start = time.perf_counter()
        stdin.write(json.dumps({"id": self.next_id, "op": "exec", "code": code}) + "\n")
        stdin.flush()
        reply = self._line()
        elapsed = (time.perf_counter() - start) * 1000
        if not reply.get("ok") or reply["cell"]["status"] != "ok":
            raise SystemExit(f"cell failed: {reply}")
        return elapsed

    def close(self) -> None:
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    bin_path = sys.argv[1]
    cells = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    runtime = sys.argv[3] if len(sys.argv) > 3 else "runsc"
    runtime_path = shutil.which(runtime)
    if runtime_path is None or shutil.which("podman") is None:
        raise SystemExit(f"needs podman and {runtime}")
    work = Path(tempfile.mkdtemp(prefix="rlm-bench-remote-"))
    conf = work / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    podman = [
        "podman", f"--root={work}/root", f"--runroot={work}/runroot", f"--tmpdir={work}/tmp",
        "--storage-driver=vfs", "--events-backend=none", f"--runtime={runtime_path}",
    ]
    if runtime == "runsc":
        podman.append("--runtime-flag=network=none")
    container = image = ""
    try:
        archive = work / "rootfs.tar"
        check([bin_path, "rootfs", "image", "--json", "--format", "oci-archive", "--output", str(archive)], env)
        loaded = check([*podman, "load", "-i", str(archive)], env)
        image = next(l.split(": ", 1)[1].strip() for l in loaded.splitlines() if l.startswith("Loaded image: "))
        render = json.loads(check([bin_path, "k8s", "render", "--json"], env))
        template = next(o for o in render["objects"] if o["kind"] == "SandboxTemplate")
        ctr = template["spec"]["podTemplate"]["spec"]["containers"][0]
        sc = ctr["securityContext"]
        memory = ctr["resources"]["limits"]["memory"].rstrip("i").lower()
        container = check(
            [*podman, "run", "-d", "--network", "none", "--cap-drop", "all",
             f"--user={sc['runAsUser']}:{sc['runAsGroup']}", "--read-only",
             "--security-opt", "no-new-privileges", f"--memory={memory}",
             "--tmpfs=/tmp:size=64m", "--tmpfs=/dev/shm:size=1m", "--workdir=/tmp", image, *WAITER],
            env,
        ).strip()
        command = shlex.join([*podman, "exec", "-i", container]) + " " + AGENT
        local = Session([bin_path, "session", "--runtime", runtime], env)
        remote = Session([bin_path, "session", "--runtime", runtime, "--agent-command", command], env)
        times: dict[str, List[float]] = {"local": [], "remote": []}
        for name, s in (("local", local), ("remote", remote)):
            for _ in range(5):  # warm-up, not counted
                s.cell("x = 1")
        while len(times["local"]) < cells:
            for name, s in (("local", local), ("remote", remote)):
                times[name] += [s.cell("x = 1") for _ in range(BLOCK)]
        local.close()
        remote.close()
        print(f"runtime {runtime}, {cells} cells each ('x = 1'), interleaved in blocks of {BLOCK}")
        for name in ("local", "remote"):
            t = times[name]
            print(f"  {name:<6} p50 {percentile(t, 50):7.2f} ms  p99 {percentile(t, 99):7.2f} ms")
        for q in (50, 99):
            ratio = percentile(times["remote"], q) / percentile(times["local"], q)
            print(f"  ratio remote/local p{q}: {ratio:.2f}")
    finally:
        if container:
            subprocess.run([*podman, "rm", "-f", "-t", "0", container], capture_output=True, env=env)
        if image:
            subprocess.run([*podman, "rmi", "--force", image], capture_output=True, env=env)
        subprocess.run(["umount", "-R", str(work / "root")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
