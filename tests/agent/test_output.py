"""A cell's output as the agent captures it (docs/PROTOCOL.md, "Channels"):
the memory files on fd 1 and 2, sys.stdout/sys.stderr's buffer, the
ceiling, and what threads and duplicated descriptors write. Driven over
the agent's stdin/stdout as the host drives it (frames.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from frames import Agent


def test_the_first_cells_output_files_are_in_place_before_standby(agent: Agent) -> None:
    """A claim's first cell finds its output files made and on fd 1 and
    2 (as every later cell does, placed after the cell before it): their
    system calls are not on the claim's path. Seen from outside, in the
    agent's open descriptors once it said `standby`: fd 1 and 2 and the
    agent's own copies, one file each."""
    fds = Path(f"/proc/{agent.proc.pid}/fd")
    links = {int(fd.name): os.readlink(fd) for fd in fds.iterdir()}
    memfds = sorted(target for target in links.values() if target.startswith("/memfd:rlm-"))
    assert memfds == ["/memfd:rlm-stderr (deleted)"] * 2 + ["/memfd:rlm-stdout (deleted)"] * 2, links
    assert (links[1], links[2]) == ("/memfd:rlm-stdout (deleted)", "/memfd:rlm-stderr (deleted)"), links
    inodes = {fd: os.stat(fds / str(fd)).st_ino for fd in links}
    copies = [fd for fd in links if fd > 2 and links[fd] == links[1]]
    assert [inodes[fd] for fd in copies] == [inodes[1]], (links, inodes)
    agent.hello()
    assert agent.exec("print(1)").out == "1\n"


def test_what_a_thread_prints_after_its_cells_done_is_the_next_cells_output(ready: Agent) -> None:
    """fd 1 points at the next cell's file as soon as a cell's `done` is
    out: a thread of an earlier cell that writes then is read with the
    next cell (it waits, without a clock, for fd 1 to be another file)."""
    cell = ready.exec(
        "import os, threading\n"
        "first = os.fstat(1).st_ino\n"
        "def late():\n"
        "    while os.fstat(1).st_ino == first:\n"
        "        os.sched_yield()\n"
        "    os.write(1, b'late\\n')\n"
        "t = threading.Thread(target=late, daemon=True)\n"
        "t.start()\n"
        "print('first')\n"
    )
    assert (cell.status, cell.out) == ("ok", "first\n")
    cell = ready.exec("t.join()\nprint('second')")
    assert (cell.status, cell.out, cell.err) == ("ok", "late\nsecond\n", ""), cell


def test_print_and_raw_writes_land_in_their_cell_and_streams_stay_apart(ready: Agent) -> None:
    cell = ready.exec(
        "import os, sys\n"
        "print('py-out')\n"
        "os.write(1, b'fd1-out\\n')\n"
        "os.write(2, b'fd2-err\\n')\n"
        "sys.stderr.write('py-err\\n')\n"
        "os.write(1, b'\\x00\\x00\\x00\\x05J{}\\n')\n"
    )
    assert cell.status == "ok"
    assert "py-out\n" in cell.out and "fd1-out\n" in cell.out and "J{}" in cell.out
    assert "fd2-err\n" in cell.err and "py-err\n" in cell.err
    assert "err" not in cell.out and "out" not in cell.err
    nxt = ready.exec("print('next')")
    assert (nxt.out, nxt.err) == ("next\n", "")


#: Prints and raw writes to fd 1, interleaved (test below).
INTERLEAVED = (
    "import os, sys\n"
    "print('flushed')\n"
    "sys.stdout.flush()\n"
    "os.write(1, b'raw\\n')\n"
    "print('kept')\n"
    "os.write(1, b'raw again\\n')\n"
    "for i in range(3000):\n"
    "    print('line %04d' % i)\n"
    "    if i in (1000, 2000, 2500):\n"
    "        os.write(1, b'raw at %d\\n' % i)\n"
    "sys.stdout.buffer.write(b'bytes\\n')\n"
    "print(sys.stdout.name, sys.stdout.fileno(), sys.stdout.isatty())\n"
)


def test_prints_and_raw_writes_come_in_python3s_order(ready: Agent) -> None:
    """sys.stdout buffers as python3's does writing to a pipe: a print
    user code flushed precedes a later raw write, an unflushed one
    follows it, a full buffer goes out where python3's would, and what
    is left at the cell's end comes last. The same code, python3 with
    its stdout a pipe, gives the same bytes."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    python3 = subprocess.run([sys.executable, "-I", "-c", INTERLEAVED], stdout=subprocess.PIPE, env=env, check=True)
    cell = ready.exec(INTERLEAVED)
    assert cell.status == "ok", cell
    assert cell.out.startswith("flushed\nraw\nraw again\nkept\nline 0000\n") and "raw at 1000" in cell.out
    assert cell.out == python3.stdout.decode()


def test_threads_printing_at_once_lose_no_line(ready: Agent) -> None:
    """The streams' buffer takes no lock (a clock read under gVisor): what
    many threads print at once, and a flush racing with them, loses nothing."""
    cell = ready.exec(
        "import sys, threading\n"
        "def chatter(n):\n"
        "    for i in range(2000):\n"
        "        print('t%d %d' % (n, i))\n"
        "        if i % 97 == 0:\n"
        "            sys.stdout.flush()\n"
        "threads = [threading.Thread(target=chatter, args=(n,)) for n in range(4)]\n"
        "for t in threads:\n"
        "    t.start()\n"
        "for t in threads:\n"
        "    t.join()\n"
    )
    assert cell.status == "ok", cell
    assert sorted(cell.out.splitlines()) == sorted("t%d %d" % (n, i) for n in range(4) for i in range(2000))


def test_large_output_arrives_whole_in_bounded_chunks_before_done(ready: Agent) -> None:
    cell = ready.exec("import sys\nsys.stdout.write('x' * 3_000_000)\nprint()\nprint('end')")
    assert cell.out == "x" * 3_000_000 + "\nend\n"


def test_output_past_the_ceiling_is_cut_off_and_reported(agent: Agent) -> None:
    agent.hello(max_output_bytes=100_000)
    limits: list[Message] = []

    def on_limit(msg: Message) -> None:
        # As the host does: the cell is interrupted.
        limits.append(msg)
        agent.send({"t": "interrupt", "cell": msg["cell"]})

    cell = agent.start_exec("import os\nwhile True:\n    print('x' * 1000)\n    os.write(2, b'y' * 100)")
    result = agent.finish(cell, on_limit=on_limit)
    assert [m["cell"] for m in limits] == [cell], limits
    assert limits[0]["bytes"] > 100_000
    assert result.status == "interrupted"
    # Sent: one byte past the ceiling, stdout first; the rest was never kept.
    assert len(result.stdout) + len(result.stderr) == 100_001
    assert set(result.out) == {"x", "\n"}
    after = agent.exec("print('next')")
    assert (after.out, after.err) == ("next\n", "")


def test_a_background_thread_printing_after_its_cell_does_not_corrupt_frames(ready: Agent) -> None:
    cell = ready.exec(
        "import threading, time, os\n"
        "stop = False\n"
        "def chatter():\n"
        "    while not stop:\n"
        "        print('chatter ' * 50)\n"
        "        os.write(2, b'raw chatter\\n')\n"
        "        time.sleep(0.001)\n"
        "t = threading.Thread(target=chatter, daemon=True)\n"
        "t.start()\n"
    )
    assert cell.status == "ok"
    for i in range(20):
        cell = ready.exec(f"x_{i} = {i}\nprint('value', x_{i})")
        assert cell.status == "ok"
        assert f"value {i}\n" in cell.out
    cell = ready.exec("stop = True\nt.join()\nprint('quiet')")
    assert cell.out.endswith("quiet\n")
    cell = ready.exec("print('after')")
    assert (cell.out, cell.err) == ("after\n", "")


def test_a_duplicated_descriptor_does_not_hold_the_cell(ready: Agent) -> None:
    started = time.monotonic()
    cell = ready.exec("import os\nkeep = os.dup(1)\nprint('kept')")
    assert (cell.status, cell.out) == ("ok", "kept\n")
    # Held, the cell would wait for the copy to close: forever.
    assert time.monotonic() - started < 30
    cell = ready.exec("try:\n    os.write(keep, b'late\\n')\nexcept OSError as e:\n    print(type(e).__name__)\n"
                      "print('next')")
    assert "late" not in cell.out and cell.out.endswith("next\n")


def test_a_later_cell_never_gets_an_earlier_cells_output_file(ready: Agent) -> None:
    # The next cells' files take the old descriptors' numbers, never their
    # files: whatever still reaches an old file (a dup, a reopen through
    # /proc, the old number itself) writes where no cell reads.
    cell = ready.exec("import os\nfd = os.fstat(1)\nkeep = os.dup(1)\n"
                      "again = os.open('/proc/self/fd/1', os.O_WRONLY)\nprint('first')")
    assert (cell.status, cell.out) == ("ok", "first\n")
    for i in range(3):
        cell = ready.exec("os.write(keep, b'dup%d\\n')\nos.write(again, b'proc%d\\n')\n"
                          "print(os.fstat(1).st_ino != fd.st_ino)" % (i, i))
        assert (cell.status, cell.out, cell.err) == ("ok", "True\n", ""), cell


def test_closed_sys_stdout_is_replaced_in_the_next_cell(ready: Agent) -> None:
    ready.exec("import sys\nsys.stdout.close()")
    assert ready.exec("print('back')").out == "back\n"
