"""What a pooled claim's path does, without a sandbox (stand-in standbys):

- Its requests reach the session in one write: the `begin` is held with
  what the caller writes behind it (`Pool.run`'s exec) until it waits,
  so the session is woken once for all of them. The stand-in says `standby` and then reads
  nothing: what reached its stdin is counted in the pipe (FIONREAD), so
  nothing depends on when it would have read.
- The claim's replacement starts only after the refill delay: a start
  (a process spawned, a sandbox created) would take the cores from the
  claim's first requests."""

from __future__ import annotations

import fcntl
import gc
import os
import resource
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Iterator

import pytest

from rlm_sandbox import Pool
from rlm_sandbox.channels import PipeChannel
from rlm_sandbox.process import SessionProcess, _readable
from rlm_sandbox.session import Session

# Says `standby`, then never reads: every byte written stays in the pipe.
STAND_IN = "import sys, time\nprint('{\"event\": \"standby\"}', flush=True)\ntime.sleep(600)\n"


def _no_calls(event: object) -> None:
    raise AssertionError(f"a call from the stand-in: {event!r}")


@pytest.fixture
def standby() -> Iterator[SessionProcess]:
    process = SessionProcess([sys.executable, "-c", STAND_IN], {}, _no_calls)
    assert process.first_line(timeout=60) == {"event": "standby"}
    yield process
    process._kill()
    process.terminate(5)


def _unread(process: SessionProcess) -> int:
    """Bytes written to the process's stdin that it has not read."""
    channel = process._channel
    assert isinstance(channel, PipeChannel)
    stdin = channel.proc.stdin
    assert stdin is not None
    buf = fcntl.ioctl(stdin.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", buf)[0])


def _forget(session: Session) -> None:
    """Closes the Session's own parts; the fixture ends the stand-in."""
    session._process = None
    session.close()


def test_a_wait_writes_what_is_held(standby: SessionProcess) -> None:
    """Nothing held is ever waited for: a wait writes it first (here the
    stand-in never answers, so the wait ends by its time bound)."""
    session = Session._claim(standby, settings={}, hold=True)
    assert _unread(standby) == 0  # the begin is held
    pending = standby.submit("exec", code="print(1)")
    assert _unread(standby) == 0  # and the exec behind it
    with pytest.raises(TimeoutError):
        standby.wait(pending, 0.01)
    begin_and_exec = _unread(standby)
    assert begin_and_exec > 0
    standby.submit("exec", code="print(2)")  # no longer held
    assert _unread(standby) > begin_and_exec
    _forget(session)


def test_an_unheld_claim_writes_its_begin_at_once(standby: SessionProcess) -> None:
    """The negative control: without `hold` the begin is in the pipe at
    once (what the counts above would show without holding)."""
    session = Session._claim(standby, settings={})
    assert _unread(standby) > 0
    _forget(session)


# A stand-in `rlm-sandbox` whose `session --standby` notes when it started
# (CLOCK_MONOTONIC, the same clock in every process), says `standby` and
# waits for its end of input.
FAKE_BINARY = """#!{python}
import sys, time
with open({log!r}, "a") as f:
    f.write("%r\\n" % time.monotonic())
print('{{"event": "standby"}}', flush=True)
sys.stdin.read()
"""


def test_a_claims_replacement_starts_after_the_refill_delay(tmp_path: Path) -> None:
    log = tmp_path / "starts"
    binary = tmp_path / "rlm-sandbox"
    binary.write_text(FAKE_BINARY.format(python=sys.executable, log=str(log)))
    binary.chmod(0o755)
    with Pool(1, binary=str(binary)) as pool:
        assert pool.wait_full(timeout=60)
        keeper = pool._keeper
        assert keeper is not None
        keeper.refill_delay = 0.5
        claimed_at = time.monotonic()
        claimed = keeper.take()
        assert claimed is not None
        assert pool.wait_full(timeout=60)
        starts = [float(line) for line in log.read_text().split()]
        assert len(starts) == 2
        # Never earlier than the delay (later only under load).
        assert starts[1] >= claimed_at + 0.5, starts[1] - claimed_at
        claimed.end_input()
        claimed.terminate(5)


# Says `standby`, then reads until its end of input.
ENDS_AT_EOF = "import sys\nprint('{\"event\": \"standby\"}', flush=True)\nsys.stdin.read()\n"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_ended_session_process_leaves_no_descriptor_behind() -> None:
    """An evaluation makes thousands of sessions in one process: each
    one's descriptors must go with it (the reader's wake pipe did not,
    two per session, until select() failed past fd 1023)."""
    gc.collect()
    before = _open_fds()
    for _ in range(20):
        process = SessionProcess([sys.executable, "-c", ENDS_AT_EOF], {}, _no_calls)
        assert process.first_line(timeout=60) == {"event": "standby"}
        process.terminate(30)
        process._stdout_thread.join(timeout=30)
        assert not process._stdout_thread.is_alive()
        del process
    gc.collect()
    assert _open_fds() - before <= 2, os.listdir("/proc/self/fd")


def test_a_timed_wait_works_on_a_descriptor_past_selects_range() -> None:
    """A client in a process with many files open gets numbers past 1023,
    which select() refuses (ValueError): the timed wait polls."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = 1500
    if soft <= high:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    r, w = os.pipe()
    try:
        fd = os.dup2(r, high)
        try:
            assert not _readable(fd, 0.01)
            os.write(w, b"x")
            assert _readable(fd, 60)
        finally:
            os.close(fd)
    finally:
        os.close(r)
        os.close(w)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
