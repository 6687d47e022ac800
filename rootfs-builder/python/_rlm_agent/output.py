"""A cell's fd 1 and fd 2, and the agent's own descriptors and streams."""

from __future__ import annotations

import fcntl
import io
import os

from .wire import CHUNK, PRIVATE_FD_MIN, STDERR, STDOUT, encode_frame

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Sequence

    from .wire import Channel


# --- Output forwarding ----------------------------------------------------------


#: How often the watchdog checks a running cell's output against the ceiling.
WATCH_EVERY = 0.05


class CellOutput:
    """One cell's fd 1 and fd 2: a memory file each (memfd), sent to the
    host as output frames when the cell ends.

    Files rather than pipes: a pipe needs a thread draining it while the
    cell runs, and the hand-offs to and from such threads cost more than
    all the rest of a cell under gVisor. A file never blocks its writer and
    the main thread alone reads it at the end. The files live in the
    sandbox's memory (its limit covers them) and the watchdog bounds them
    by the host's output ceiling. Every cell gets new files, so a
    descriptor user code duplicated from fd 1 writes into a file nobody
    reads any more, never into a later cell. (Reusing a file instead
    would save its system calls, but nothing cheap tells whether user
    code still holds it: a dup, a child's inherited fd 1, an mmap or an
    open of /proc/self/fd/1 all reach the same file, and none shows in
    its link count or in a write lease's check.)

    `slots`, the last cell's descriptors: the new files take their
    numbers (dup3 replaces and closes the old files in one call each),
    which saves a close and the search for a free number per file."""

    def __init__(self, slots: Sequence[int] = ()) -> None:
        #: The cell the files are for (set when it starts).
        self.cell = 0
        #: The watchdog cut this cell's output off at the ceiling.
        self.limited = False
        self.files: list[int] = []
        try:
            for i, name in enumerate(("rlm-stdout", "rlm-stderr")):
                fd = os.memfd_create(name, os.MFD_CLOEXEC)
                try:
                    if i < len(slots):
                        self.files.append(os.dup2(fd, slots[i], inheritable=False))
                    else:
                        self.files.append(private_fd(fd))
                finally:
                    os.close(fd)
        except OSError:
            self.close()
            for slot in slots[len(self.files):]:
                close_quietly(slot)
            raise

    def size(self) -> int:
        """Bytes written to both files so far."""
        return sum(os.fstat(fd).st_size for fd in self.files)

    def send(self, channel: Channel, limit: int) -> bytes:
        """Sends the files' bytes as output frames, stdout first: at most
        `limit` + 1 bytes in all (one past the ceiling, so the host sees it
        crossed), each file only as far as its size now (a writer that
        kept a descriptor cannot keep this going). The frames of a small
        output are returned instead, to go out with the cell's `done`."""
        # A small output is read whole, one system call per file (each is
        # dear under gVisor): read one byte more than a chunk to know.
        heads = [os.pread(fd, CHUNK + 1, 0) for fd in self.files]
        if sum(len(h) for h in heads) <= CHUNK:
            return b"".join(encode_frame(kind, head) for kind, head in zip((STDOUT, STDERR), heads) if head)
        sizes = [os.fstat(fd).st_size for fd in self.files]
        budget = limit + 1
        for kind, fd, size in zip((STDOUT, STDERR), self.files, sizes):
            end = min(size, budget)
            offset = 0
            while offset < end:
                data = os.pread(fd, min(CHUNK, end - offset), offset)
                if not data:
                    break
                channel.send(kind, data)
                offset += len(data)
            budget -= offset
        return b""

    def close(self) -> None:
        for fd in self.retire():
            close_quietly(fd)

    def retire(self) -> list[int]:
        """Gives up the files' descriptors (still open) to the caller: the
        next cell's files take their numbers."""
        files, self.files = self.files, []
        return files


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def private_fd(fd: int) -> int:
    """A close-on-exec duplicate of `fd` at PRIVATE_FD_MIN or above."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FD_MIN)


def text_stream(fd: int, mode: str) -> io.TextIOWrapper:
    """sys.stdin/stdout/stderr on `fd`: UTF-8 whatever the locale, and not
    owning the descriptor (user code closing sys.stdout closes no fd).
    stdout is block-buffered as in any script whose output is a pipe (a
    write per print costs five times as much, more under gVisor; the cell's
    end flushes it); stderr is line-buffered, as Python's own is."""
    raw = io.FileIO(fd, mode, closefd=False)
    buffered: Any = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    errors = "strict" if mode == "r" else "backslashreplace"
    return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors, line_buffering=fd == 2)


def usable(stream: Any) -> bool:
    """Whether a sys stream can still be written (user code may close or replace it)."""
    try:
        return stream is not None and not stream.closed
    except Exception:
        return True


def flush(stream: Any) -> None:
    """Flushes a sys stream user code may have replaced with anything."""
    try:
        if stream is not None:
            stream.flush()
    except Exception:
        pass


def write_fd(fd: int, text: str) -> None:
    """Writes all of `text` to `fd` (used for tracebacks into the cell's stderr)."""
    data = memoryview(text.encode("utf-8", "backslashreplace"))
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass
