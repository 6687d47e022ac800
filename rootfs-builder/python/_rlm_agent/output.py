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
        #: fd 1 and 2 point at the files already (made ahead of their cell).
        self.placed = False
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

    def send(self, channel: Channel, limit: int, tails: Sequence[bytes] = (b"", b"")) -> bytes:
        """Sends the files' bytes as output frames, stdout first, each
        followed by its tail (what the stream still buffered, see
        StdBuffer): at most `limit` + 1 bytes in all (one past the
        ceiling, so the host sees it crossed), each file only as far as
        its size now (a writer that kept a descriptor cannot keep this
        going). The frames of a small output are returned instead, to go
        out with the cell's `done`."""
        # A small output is read whole, one system call per file (each is
        # dear under gVisor): read one byte more than a chunk to know.
        heads = [os.pread(fd, CHUNK + 1, 0) for fd in self.files]
        if sum(len(h) for h in heads) + sum(len(t) for t in tails) <= CHUNK:
            return b"".join(encode_frame(kind, head + tail)
                            for kind, head, tail in zip((STDOUT, STDERR), heads, tails) if head or tail)
        sizes = [os.fstat(fd).st_size for fd in self.files]
        budget = limit + 1
        for kind, fd, size, tail in zip((STDOUT, STDERR), self.files, sizes, tails):
            end = min(size, budget)
            offset = 0
            while offset < end:
                data = os.pread(fd, min(CHUNK, end - offset), offset)
                if not data:
                    break
                channel.send(kind, data)
                offset += len(data)
            budget -= offset
            tail = tail[:max(0, budget)]
            for start in range(0, len(tail), CHUNK):
                channel.send(kind, tail[start:start + CHUNK])
            budget -= len(tail)
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


#: Bytes sys.stdout/stderr keep before writing them out: python3's own
#: buffer on a pipe (its st_blksize), so what fills it goes out where
#: python3's would.
STD_BUFFER = 4096


class StdBuffer(io.BufferedIOBase):
    """The binary buffer under sys.stdout and sys.stderr: what
    io.BufferedWriter does for them, without its lock and without a
    write at a cell's end.

    Why: CPython 3.11 reads the monotonic clock on every lock acquire,
    and under gVisor here a clock read is a system call; BufferedWriter
    takes its lock on every write and flush, three clock reads in a cell
    that prints. And what is still buffered when a cell ends need not
    pass through the cell's file: the agent takes it (`take`) and sends
    it after what the file holds, where the last flush would have put it
    (one write fewer per cell). A flush user code asks for, or a full
    buffer, writes to the descriptor as before, so the order of what
    user code flushed and what a child process wrote is unchanged.

    No lock: a write appends to a list (atomic under the GIL) and a
    flush or `take` removes only the chunks it joined, so nothing another
    thread writes meanwhile is lost (two threads flushing at once may
    write their parts in either order, as their prints interleave anyway).
    Closing it never closes the descriptor (user code closing sys.stdout
    closes no fd)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        #: What sys.stdout.name says: python3's own names.
        self.name = {1: "<stdout>", 2: "<stderr>"}.get(fd, "<fd %d>" % fd)
        self._chunks: list[bytes] = []
        self._size = 0
        #: While set, flush() keeps the bytes for `take` (a cell's end).
        self.holding = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to closed file")
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > STD_BUFFER:
            self._write_out()
        return len(chunk)

    def flush(self) -> None:
        if self.closed:
            raise ValueError("flush of closed file")
        if not self.holding:
            self._write_out()

    def take(self) -> bytes:
        """What is buffered, removed from the buffer."""
        count = len(self._chunks)
        data = b"".join(self._chunks[:count])
        del self._chunks[:count]
        self._size = max(0, self._size - len(data))
        return data

    def _write_out(self) -> None:
        data = memoryview(self.take())
        while data:
            data = data[os.write(self.fd, data):]


def text_stream(fd: int, mode: str) -> io.TextIOWrapper:
    """sys.stdin/stdout/stderr on `fd`: UTF-8 whatever the locale, and not
    owning the descriptor (user code closing sys.stdout closes no fd).
    stdout is block-buffered as in any script whose output is a pipe (a
    write per print costs five times as much, more under gVisor; the cell's
    end takes what is left, see StdBuffer); stderr is line-buffered, as
    Python's own is."""
    if mode == "r":
        buffered: Any = io.BufferedReader(io.FileIO(fd, mode, closefd=False))
        return io.TextIOWrapper(buffered, encoding="utf-8", errors="strict")
    return io.TextIOWrapper(StdBuffer(fd), encoding="utf-8", errors="backslashreplace", line_buffering=fd == 2)


def held(stream: Any) -> bytes:
    """Flushes a sys stream user code may have replaced with anything;
    what it buffered in a StdBuffer is returned instead of written."""
    buffer = getattr(stream, "buffer", None)
    if not isinstance(buffer, StdBuffer):
        flush(stream)
        return b""
    buffer.holding = True
    try:
        flush(stream)
    finally:
        buffer.holding = False
    return buffer.take()


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
