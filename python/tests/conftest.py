"""Shared fixtures: the binary under test, the runtimes, a private state
directory per test, and a check that a session left nothing behind.

These tests start real sandboxes (as root, with runc/runsc and the rootfs
that scripts/setup installs). A missing prerequisite skips a test locally
and fails it when CI=true, as the Rust integration tests do."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from rlm_sandbox import find_binary

CHECKOUT = Path(__file__).resolve().parents[2]
RUNTIMES = ("runsc", "runc")


def _missing(runtime: str) -> List[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root privileges")
    if shutil.which(runtime) is None and not os.environ.get(f"RLM_{runtime.upper()}_PATH"):
        missing.append(f"{runtime} (apt-get install {runtime})")
    try:
        binary = find_binary()
    except Exception as e:
        return missing + [str(e)]
    shown = subprocess.run([binary, "rootfs", "show"], capture_output=True)
    if shown.returncode != 0:
        missing.append("the rootfs (scripts/setup builds it)")
    return missing


def require(runtime: str) -> None:
    """Skips (or with CI=true fails) the test when `runtime` cannot run here."""
    missing = _missing(runtime)
    if missing:
        why = "missing " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and " + why)
        pytest.skip(why)


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state directory of this test's own, so leftovers are its own."""
    path = tmp_path / "state"
    path.mkdir()
    return path


def cgroup_mounts() -> List[Path]:
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if " - cgroup " in line or " - cgroup2 " in line:
                mounts.append(Path(line.split()[4]))
    return mounts


def pids_mentioning(text: str) -> List[int]:
    """Processes whose command line names `text` (a run id)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def leftovers(state_dir: Path, session_pid: int) -> List[str]:
    """What is left of the runs of the session process `session_pid`
    (their ids are `rlms-<pid>-...`): run directories, cgroups, processes."""
    prefix = f"rlms-{session_pid}-"
    left = [f"run directory {p.name}" for p in state_dir.iterdir() if p.name.startswith(prefix)]
    for hierarchy in cgroup_mounts():
        parent = hierarchy / "rlm-sandbox"
        if parent.is_dir():
            left += [f"cgroup {p}" for p in parent.iterdir() if p.name.startswith(prefix)]
    pids = pids_mentioning(prefix)
    if pids:
        left.append(f"processes naming the run: {pids}")
    return left


def assert_clean(state_dir: Path, session_pid: int, wait: float = 30.0) -> None:
    """Nothing of the session `session_pid` remains (after up to `wait` s:
    a killed process takes a moment to be reaped), and it has exited."""
    deadline = time.monotonic() + wait
    while True:
        left = leftovers(state_dir, session_pid)
        alive = Path(f"/proc/{session_pid}").exists() and _state(session_pid) != "Z"
        if not left and not alive:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {left}" + (f"; session process {session_pid} alive" if alive else ""))
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


@pytest.fixture
def settings(runtime: str, state_dir: Path) -> Iterator[dict]:
    """Session/run settings for this test's runtime and state directory."""
    yield {"runtime": runtime, "state_dir": str(state_dir)}
