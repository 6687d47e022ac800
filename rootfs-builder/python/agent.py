"""rlm-sandbox's agent: the sandbox's process in a session.

Installed byte-compiled into the rootfs's stdlib as `_rlm_agent` and run as
`python3 -I -B -m _rlm_agent`. It speaks the frame protocol of
docs/PROTOCOL.md ("Agent frames") with the host over the sandbox's stdin
and stdout, runs cells of user code in one persistent namespace, forwards
what cells write to fd 1 and fd 2 as output frames, and turns the user's
`llm_query`/`rlm_query`/tool calls into call frames.

It is cooperative, not trusted: user code runs in this interpreter and can
reach everything here, so nothing in this file is a security boundary (the
host parses every frame strictly and enforces every limit itself). What it
must do is keep the protocol intact for code that does not attack it: whole
frames under one lock, a cell's output before its `done`, interrupts that
land in user code and never in the agent's own frame handling.

Standard library only, and none of subprocess, multiprocessing or ctypes:
they are blocked in the sandbox.
"""

import builtins
import collections
import fcntl
import io
import json
import keyword
import linecache
import mmap
import os
import queue
import re
import signal
import struct
import sys
import threading
import time
import traceback
import types
from typing import Any, BinaryIO, Callable, Iterator, Optional, Union

# --- Framing ---------------------------------------------------------------

#: Frame types (the body's first byte).
JSON = 0x4A
STDOUT = 0x31
STDERR = 0x32

#: Largest output chunk sent in one frame.
CHUNK = 64 << 10
#: Host frames above this are refused: the agent exits (the host never
#: sends anything near it; a bigger length means a broken channel).
MAX_HOST_FRAME = 64 << 20
#: The host's limit on agent frames when `hello` does not say.
DEFAULT_MAX_FRAME = (8 << 20) + (64 << 10)
DEFAULT_MAX_LOAD_BYTES = 64 << 20
DEFAULT_MAX_PROMPT_BYTES = 4 << 20
#: How often the watchdog checks a running cell's output against the ceiling.
WATCH_EVERY = 0.05
#: The host's output ceiling per cell unless `hello` says otherwise.
DEFAULT_MAX_OUTPUT_BYTES = 256 << 20
#: Private descriptors start here, out of the way of user code's files.
PRIVATE_FD_MIN = 100
#: Cells whose source tracebacks can show.
KEPT_SOURCES = 256
#: Room kept free in a frame for the envelope of a message (ids, keys).
FRAME_SLACK = 256

_HEADER = struct.Struct(">IB")


class FrameError(Exception):
    """A frame that breaks the protocol: the channel cannot be trusted after it."""


class FrameTooLarge(ValueError):
    """A message that would exceed the host's `max_frame`: sending it would end the session."""


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One whole frame: u32 big-endian length of the body, the type byte, the payload."""
    return _HEADER.pack(len(payload) + 1, kind) + payload


def encode_json(value: Any) -> bytes:
    """JSON as the host accepts it: UTF-8 (lone surrogates replaced, since
    they are not valid UTF-8), no NaN or infinities (not JSON)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace")


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes; fewer only at end of stream."""
    parts = []
    left = n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(stream: BinaryIO, max_len: int = MAX_HOST_FRAME) -> Optional[tuple[int, bytes]]:
    """The next frame as (type, payload); None at end of stream between
    frames. The length is checked before the body is read, so a hostile or
    broken length never allocates."""
    header = _read_exactly(stream, 4)
    if not header:
        return None
    if len(header) < 4:
        raise EOFError("the channel ended inside a frame header")
    (length,) = struct.unpack(">I", header)
    if length == 0:
        raise FrameError("an empty frame")
    if length > max_len:
        raise FrameError("a frame of %d bytes; the limit is %d" % (length, max_len))
    body = _read_exactly(stream, length)
    if len(body) < length:
        raise EOFError("the channel ended inside a frame")
    return body[0], body[1:]


# --- Interrupt safety --------------------------------------------------------

#: Code of the agent's protocol handling: an interrupt that arrives while
#: any of these is on the stack (inside the user code's innermost frames)
#: is deferred, so it can never cut a frame in half or lose a call.
_PROTOCOL_CODES: set[types.CodeType] = set()

_AnyFunc = Callable[..., Any]


def _protocol(fn: _AnyFunc) -> _AnyFunc:
    """Marks `fn` as protocol handling (see `_PROTOCOL_CODES`)."""
    _PROTOCOL_CODES.add(fn.__code__)
    return fn


def _agent_file() -> str:
    """The file name this module's code carries, to recognise its frames."""
    return _agent_file.__code__.co_filename


_AGENT_FILE = _agent_file()
_CELL_PREFIX = "<cell "


def lands_in_user_code(frame: Optional[types.FrameType]) -> bool:
    """Whether a KeyboardInterrupt raised in `frame` (the main thread's
    innermost frame when the signal is handled) would land in user code:
    walking outward, a cell's frame comes before any protocol frame.
    Library code called by a cell (json, threading's Event.wait, ctx's
    methods) counts as user code; library code called by the agent's
    protocol handling does not."""
    while frame is not None:
        code = frame.f_code
        if code in _PROTOCOL_CODES:
            return False
        if code.co_filename.startswith(_CELL_PREFIX):
            return True
        frame = frame.f_back
    return False


class Interrupts:
    """When the host's `interrupt` may raise KeyboardInterrupt in the main
    thread: only while it runs user code of the cell it names.

    The reader thread decides under the lock and signals the main thread
    with pthread_kill, so a blocking call (time.sleep, a lock, a read) is
    interrupted too. The SIGINT handler itself takes no lock (it runs in
    the main thread, which may hold it) and raises only where
    `lands_in_user_code` says; otherwise the interrupt stays pending.

    A signal can be lost for a while: one that arrives just before a
    blocking system call starts is handled only when the call returns
    (time.sleep(30) would sleep on), and a deferred one waits for a safe
    point. So the signal is sent again every RESEND seconds until one has
    raised KeyboardInterrupt in the cell or the cell has left user code."""

    RESEND = 0.02
    #: Resending stops after this long (the host kills the sandbox sooner).
    RESEND_FOR = 60.0

    def __init__(self, main_ident: int) -> None:
        self.main_ident = main_ident
        self.lock = threading.Lock()
        self.in_user = False
        self.cell: Optional[int] = None
        self.last_started = -1
        #: Cell an interrupt was asked for before it started.
        self.early: Optional[int] = None
        #: Cell the last signal was sent for, until the handler sees it.
        self.wanted: Optional[int] = None
        #: Cell whose interrupt was raised (so resent signals are dropped).
        self.delivered: Optional[int] = None
        self.pending = False

    def request(self, cell: int) -> None:
        """The host's `interrupt` (reader thread): signal the main thread if
        `cell` is in user code (and keep signalling); remember it if `cell`
        has not started."""
        with self.lock:
            if self._interruptible(cell):
                self._signal(cell)
                threading.Thread(target=self._resend, args=(cell,), name="rlm-interrupt", daemon=True).start()
            elif cell > self.last_started:
                self.early = cell

    def _interruptible(self, cell: int) -> bool:
        """Whether `cell` runs user code and has not been interrupted yet (under the lock)."""
        return self.in_user and self.cell == cell and self.delivered != cell

    def _signal(self, cell: int) -> None:
        self.wanted = cell
        signal.pthread_kill(self.main_ident, signal.SIGINT)

    def _resend(self, cell: int) -> None:
        """Signals again until the interrupt has landed (see the class doc)."""
        deadline = time.monotonic() + self.RESEND_FOR
        while time.monotonic() < deadline:
            time.sleep(self.RESEND)
            with self.lock:
                if not self._interruptible(cell):
                    return
                self._signal(cell)

    @_protocol
    def enter(self, cell: int) -> None:
        """The main thread starts running `cell`'s user code."""
        with self.lock:
            self.cell = cell
            self.last_started = max(self.last_started, cell)
            self.pending = self.early == cell
            self.early = None
            self.in_user = True

    @_protocol
    def leave(self) -> None:
        """The main thread is back in the agent: no interrupt lands any more."""
        with self.lock:
            self.in_user = False
            self.pending = False
            self.cell = None

    def check(self) -> None:
        """A safe point in the main thread: raise a deferred interrupt."""
        if self.pending and self.in_user and threading.get_ident() == self.main_ident:
            self.pending = False
            self.delivered = self.cell
            raise KeyboardInterrupt

    def handler(self, signum: int, frame: Optional[types.FrameType]) -> None:
        """SIGINT in the main thread: KeyboardInterrupt in user code only,
        once per request. A signal sent for an earlier cell (handled late),
        or resent after the interrupt landed, is dropped; a SIGINT user
        code sent itself interrupts as usual."""
        wanted, self.wanted = self.wanted, None
        if not self.in_user:
            return
        if wanted is not None and (wanted != self.cell or self.delivered == wanted):
            return
        if lands_in_user_code(frame):
            self.pending = False
            self.delivered = self.cell
            raise KeyboardInterrupt
        self.pending = True


# --- The frame channel to the host --------------------------------------------


class Channel:
    """Agent → host frames. Every frame is written whole under one lock
    (os.write may write part of a buffer), so frames from the watchdog,
    callers in threads and the main thread never interleave."""

    def __init__(self, fd: int, on_broken: Callable[[str], None]) -> None:
        self.fd = fd
        self.max_frame = DEFAULT_MAX_FRAME
        self._lock = threading.Lock()
        self._on_broken = on_broken

    @_protocol
    def send(self, kind: int, payload: bytes, before: bytes = b"") -> None:
        """Writes one frame, after the whole frames `before` (one write for
        both: a system call and a wake-up of the host saved); a broken
        channel means the host is gone."""
        data = memoryview(before + encode_frame(kind, payload))
        with self._lock:
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError as e:
                self._on_broken("the frame channel to the host broke: %s" % e)

    @_protocol
    def send_json(self, msg: dict[str, Any], before: bytes = b"") -> None:
        """Sends `msg` as a J frame (after the frames `before`);
        FrameTooLarge instead of a frame the host would refuse."""
        payload = encode_json(msg)
        if len(payload) + 1 > self.max_frame:
            raise FrameTooLarge(
                "a %r message of %d bytes is above the frame limit of %d"
                % (msg.get("t"), len(payload) + 1, self.max_frame)
            )
        self.send(JSON, payload, before)


# --- Output forwarding ----------------------------------------------------------


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
    reads any more, never into a later cell."""

    def __init__(self) -> None:
        #: The cell the files are for (set when it starts).
        self.cell = 0
        #: The watchdog cut this cell's output off at the ceiling.
        self.limited = False
        self.files: list[int] = []
        try:
            for name in ("rlm-stdout", "rlm-stderr"):
                fd = os.memfd_create(name, os.MFD_CLOEXEC)
                try:
                    self.files.append(_private_fd(fd))
                finally:
                    os.close(fd)
        except OSError:
            self.close()
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
        sizes = [os.fstat(fd).st_size for fd in self.files]
        if sum(sizes) <= CHUNK:
            return b"".join(
                encode_frame(kind, os.pread(fd, size, 0))
                for kind, fd, size in zip((STDOUT, STDERR), self.files, sizes)
                if size
            )
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
        for fd in self.files:
            try:
                os.close(fd)
            except OSError:
                pass
        self.files = []


# --- Calls to the host -------------------------------------------------------------


class Waiter:
    """A caller blocked until its call's `call_result` arrives."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.outcome: dict[str, Any] = {}


class Calls:
    """Call ids (unique per session, from 1) and the callers waiting on
    them; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 1
        self._waiting: dict[int, Waiter] = {}

    @_protocol
    def submit(self, channel: Channel, fields: dict[str, Any]) -> tuple[int, Waiter]:
        """Sends one `call` frame; the caller then waits on the Waiter.
        Callers check the frame's size first: an id is never skipped."""
        waiter = Waiter()
        with self._lock:
            call = self._next
            self._next += 1
            self._waiting[call] = waiter
        try:
            channel.send_json({"t": "call", "call": call, **fields})
        except BaseException:
            self.forget(call)
            raise
        return call, waiter

    @_protocol
    def forget(self, call: int) -> None:
        """Stops waiting for `call` (its caller was interrupted); a late
        result is then ignored."""
        with self._lock:
            self._waiting.pop(call, None)

    def resolve(self, msg: dict[str, Any]) -> None:
        """A `call_result` (reader thread): wakes its caller, if still waiting."""
        call = msg.get("call")
        with self._lock:
            waiter = self._waiting.pop(call, None) if isinstance(call, int) else None
        if waiter is not None:
            waiter.outcome = msg
            waiter.event.set()


def _item_text(item: Any, missing: str) -> str:
    """One prompt's answer as the code sees it: a string always."""
    if isinstance(item, str):
        return item
    if item is None:
        return "Error: " + missing
    return str(item)


def outcome_texts(outcome: dict[str, Any], count: int) -> list[str]:
    """A `call_result` as `count` answers: the results, or "Error: ..."
    for each item when the call failed (as the reference library does)."""
    error = outcome.get("error")
    if isinstance(error, str):
        return ["Error: " + error] * count
    results = outcome.get("results")
    if not isinstance(results, list):
        return ["Error: the host answered without results"] * count
    missing = "the host gave %d answers for %d prompts" % (len(results), count)
    return [_item_text(results[i] if i < len(results) else None, missing) for i in range(count)]


# --- Contexts ------------------------------------------------------------------------

#: Chunk for counting newlines without copying a whole file.
_COUNT_CHUNK = 16 << 20
#: Longest `text` search_lines returns for one line (a window around the match).
_LINE_TEXT_MAX = 4096


def _decode(data: bytes) -> str:
    """Bytes of a context as text: UTF-8, undecodable bytes replaced."""
    return data.decode("utf-8", "replace")


def _regex(pattern: Union[str, bytes, "re.Pattern[Any]"], ignore_case: bool) -> "re.Pattern[bytes]":
    """A bytes regex (the file is bytes): str patterns are UTF-8 encoded,
    so classes like \\w and [é] are byte-wise. ^ and $ match at lines."""
    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    if isinstance(pattern, re.Pattern):
        flags |= pattern.flags & (re.IGNORECASE | re.DOTALL | re.VERBOSE)
        pattern = pattern.pattern
    if isinstance(pattern, str):
        pattern = pattern.encode("utf-8")
    if not isinstance(pattern, bytes):
        raise TypeError("pattern must be str or bytes, not %s" % type(pattern).__name__)
    return re.compile(pattern, flags)


def _limit(max_results: Optional[int]) -> int:
    """`max_results` as a count; None is no limit."""
    if max_results is None:
        return sys.maxsize
    return max(0, int(max_results))


class ContextFile:
    """A read-only handle on one context file (`ctx`, `ctxs[i]`), over an
    mmap of it: nothing is loaded, so a context of gigabytes is searched
    and read in pieces in little memory. Offsets and lengths are bytes;
    text is decoded as UTF-8 with undecodable bytes replaced."""

    __slots__ = ("_index", "_path", "_format", "_size", "_buf")
    _index: int
    _path: str
    _format: str
    _size: int
    _buf: Union[mmap.mmap, bytes]

    def __init__(self, index: int, path: str, fmt: str, size: int, buf: Union[mmap.mmap, bytes]) -> None:
        for name, value in (("_index", index), ("_path", path), ("_format", fmt), ("_size", size), ("_buf", buf)):
            object.__setattr__(self, name, value)

    @classmethod
    def open(cls, index: int, path: str, fmt: str) -> "ContextFile":
        """Maps the file (an empty file cannot be mapped: it reads as b"")."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf: Union[mmap.mmap, bytes] = b""
            if size:
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(index, path, fmt, size, buf)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("context handles are read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("context handles are read-only")

    def __repr__(self) -> str:
        return "<context %d: %s, %s, %d bytes>" % (self._index, self._path, self._format, self._size)

    def __len__(self) -> int:
        return self._size

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self._size

    @property
    def index(self) -> int:
        return self._index

    @property
    def path(self) -> str:
        return self._path

    @property
    def format(self) -> str:
        """"text" or "json": how the context was given."""
        return self._format

    def raw(self) -> bytes:
        """The whole file as bytes (loads it: only for contexts that fit)."""
        return bytes(self._buf[:])

    def read(self, start: int, length: int) -> str:
        """`length` bytes from byte offset `start`, as text."""
        start, length = int(start), int(length)
        if length < 0:
            raise ValueError("length must not be negative")
        start = min(max(start, 0), self._size)
        return _decode(self._buf[start:start + length])

    def head(self, n: int = 2000) -> str:
        """The first `n` bytes, as text."""
        return self.read(0, n)

    def tail(self, n: int = 2000) -> str:
        """The last `n` bytes, as text."""
        n = max(int(n), 0)
        return self.read(max(self._size - n, 0), n)

    def snippet(self, offset: int, window: int = 500) -> str:
        """`window` bytes on each side of byte offset `offset`, as text."""
        offset, window = int(offset), max(int(window), 0)
        start = max(offset - window, 0)
        return self.read(start, max(offset + window - start, 0))

    def search(self, pattern: Union[str, bytes], max_results: Optional[int] = 10,
               ignore_case: bool = False) -> list[dict[str, Any]]:
        """Matches of the regex `pattern`: [{"offset": byte offset, "match": text}]."""
        regex, limit = _regex(pattern, ignore_case), _limit(max_results)
        found: list[dict[str, Any]] = []
        if not limit:
            return found
        for m in regex.finditer(self._buf):
            found.append({"offset": m.start(), "match": _decode(m.group(0))})
            if len(found) >= limit:
                break
        return found

    def search_lines(self, pattern: Union[str, bytes], max_results: Optional[int] = 10,
                     ignore_case: bool = False) -> list[dict[str, Any]]:
        """Lines with a match of `pattern`, one entry per line:
        [{"line": number from 1, "offset": byte offset of text, "text": the
        line}]; a line longer than 4 KiB is cut to a window around the match."""
        regex, limit = _regex(pattern, ignore_case), _limit(max_results)
        found: list[dict[str, Any]] = []
        pos, line, counted = 0, 1, 0
        while len(found) < limit and pos <= self._size:
            m = regex.search(self._buf, pos)
            if m is None:
                break
            begin, end = self._line_bounds(m.start())
            line += self._count_newlines(counted, begin)
            counted = begin
            lo, hi = self._text_window(begin, end, m.start())
            text = _decode(self._buf[lo:hi])
            found.append({"line": line, "offset": lo, "text": text[:-1] if text.endswith("\r") else text})
            pos = end + 1
        return found

    def iter_lines(self, start: int = 0) -> Iterator[str]:
        """The lines from byte offset `start` on, without their "\\n"."""
        pos = min(max(int(start), 0), self._size)
        while pos < self._size:
            end = self._buf.find(b"\n", pos)
            if end < 0:
                end = self._size
            text = _decode(self._buf[pos:end])
            yield text[:-1] if text.endswith("\r") else text
            pos = end + 1

    def _line_bounds(self, offset: int) -> tuple[int, int]:
        """(start, end) of the line holding byte `offset`; end is its "\\n" or the file's end."""
        begin = self._buf.rfind(b"\n", 0, offset) + 1
        end = self._buf.find(b"\n", offset)
        return begin, (self._size if end < 0 else end)

    @staticmethod
    def _text_window(begin: int, end: int, at: int) -> tuple[int, int]:
        """The part of line [begin, end) search_lines returns: all of it, or
        _LINE_TEXT_MAX bytes around `at`."""
        if end - begin <= _LINE_TEXT_MAX:
            return begin, end
        lo = max(begin, at - _LINE_TEXT_MAX // 2)
        return lo, min(end, lo + _LINE_TEXT_MAX)

    def _count_newlines(self, start: int, end: int) -> int:
        """Newlines in [start, end), a chunk at a time (no whole-file copy)."""
        total = 0
        while start < end:
            stop = min(start + _COUNT_CHUNK, end)
            total += self._buf[start:stop].count(b"\n")
            start = stop
        return total


class ContextError(Exception):
    """A context that cannot be opened or parsed: the message says which and why."""


def _human(size: int) -> str:
    """A size for people."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return "%.1f %s" % (size / scale, unit)
    return "%d bytes" % size


def not_loaded_text(name: str, handle: str, size: int, max_load: int) -> str:
    """What a context's name holds when the context is above max_load_bytes:
    what happened, and how to read it anyway."""
    return (
        "[{name} is not loaded: it is {size} bytes ({human}), above the sandbox's load limit of "
        "{limit} bytes. Read it through {h}, a handle on the file: {h}.size, {h}.head(n), "
        "{h}.tail(n), {h}.read(start, length), {h}.snippet(offset, window), {h}.search(pattern), "
        "{h}.search_lines(pattern), {h}.iter_lines(start)]"
    ).format(name=name, size=size, human=_human(size), limit=max_load, h=handle)


def load_value(handle: ContextFile) -> Any:
    """A context's value: the text, or the parsed JSON."""
    data = handle.raw()
    if handle.format != "json":
        return _decode(data)
    try:
        return json.loads(data)
    except ValueError as e:
        raise ContextError("context %d (%s) is not valid JSON: %s" % (handle.index, handle.path, e)) from None


def open_context(spec: Any) -> ContextFile:
    """The handle for a context as `hello`/`add_context` describe it."""
    if not isinstance(spec, dict):
        raise ContextError("a context must be an object")
    index, path, fmt = spec.get("index"), spec.get("path"), spec.get("format", "text")
    if not isinstance(index, int) or index < 0 or not isinstance(path, str):
        raise ContextError("a context needs an index (int) and a path (str)")
    if fmt not in ("text", "json"):
        raise ContextError("context %d has an unknown format %r" % (index, fmt))
    try:
        return ContextFile.open(index, path, fmt)
    except (OSError, ValueError) as e:
        raise ContextError("cannot open context %d at %s: %s" % (index, path, getattr(e, "strerror", None) or e)) from None


# --- Tracebacks ------------------------------------------------------------------------


def _strip_agent_frames(te: traceback.TracebackException, seen: set[int]) -> None:
    """Removes the agent's frames from `te` and the exceptions chained to it."""
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != _AGENT_FILE])
    for chained in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())):
        if chained is not None:
            _strip_agent_frames(chained, seen)


def format_user_exception(exc: BaseException) -> str:
    """A traceback as the user expects it: their cells and the library code
    they called, none of the agent's frames around it."""
    te = traceback.TracebackException.from_exception(exc)
    _strip_agent_frames(te, set())
    return "".join(te.format())


# --- The user's namespace -------------------------------------------------------------


_MISSING = object()


def new_namespace() -> dict[str, Any]:
    """Fresh user globals: the dict of a `__main__` module of their own,
    registered as sys.modules["__main__"] so pickle, `import __main__` and
    class definitions behave as in a script; the agent's globals stay apart."""
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def new_answer() -> dict[str, Any]:
    return {"content": "", "ready": False}


def _is_true(value: Any) -> bool:
    """bool(), for values user code made (whose __bool__ may raise)."""
    try:
        return bool(value)
    except Exception:
        return False


def _size_of(value: Any) -> Optional[int]:
    """len(value) where it has one (user __len__ may raise)."""
    if not hasattr(type(value), "__len__"):
        return None
    try:
        size = len(value)
    except Exception:
        return None
    return size if isinstance(size, int) else None


def bounded_repr(value: Any, max_bytes: int) -> tuple[str, bool]:
    """(repr cut to `max_bytes` UTF-8 bytes, whether it was cut). Strings
    and bytes are cut before repr, so a gigabyte string costs little."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > max_bytes:
        value = value[:max_bytes + 1]
    data = repr(value).encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8"), False
    return data[:max_bytes].decode("utf-8", "ignore"), True


def valid_name(name: Any) -> bool:
    """A name a Python function or parameter can have."""
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


_TOOL_CALL = "_rlm_tool_call"


def make_tool(name: str, params: list[str], call: Callable[[str, dict[str, Any]], Any]) -> _AnyFunc:
    """A plain function `name(params...)` that sends its arguments, by
    parameter name, to `call`. Made from source so its signature is real:
    wrong arguments are the usual TypeError, help() shows the parameters.
    Its code carries the agent's file name, so tracebacks leave it out."""
    if not valid_name(name) or not all(valid_name(p) and p != _TOOL_CALL for p in params) \
            or len(set(params)) != len(params):
        raise ValueError("tool %r has an invalid name or parameters %r" % (name, params))
    mapping = ", ".join("%r: %s" % (p, p) for p in params)
    source = "def %s(%s):\n    return %s(%r, {%s})\n" % (name, ", ".join(params), _TOOL_CALL, name, mapping)
    scope: dict[str, Any] = {_TOOL_CALL: call}
    exec(compile(source, _AGENT_FILE, "exec", dont_inherit=True), scope)
    fn: _AnyFunc = scope[name]
    fn.__doc__ = "Calls the orchestrator's tool %r with (%s); returns its result." % (name, ", ".join(params))
    return fn


# --- The agent ---------------------------------------------------------------------------


def _private_fd(fd: int) -> int:
    """A close-on-exec duplicate of `fd` at PRIVATE_FD_MIN or above."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FD_MIN)


def _text_stream(fd: int, mode: str) -> io.TextIOWrapper:
    """sys.stdin/stdout/stderr on `fd`: UTF-8 whatever the locale, and not
    owning the descriptor (user code closing sys.stdout closes no fd).
    stdout is block-buffered as in any script whose output is a pipe (a
    write per print costs five times as much, more under gVisor; the cell's
    end flushes it); stderr is line-buffered, as Python's own is."""
    raw = io.FileIO(fd, mode, closefd=False)
    buffered: Any = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    errors = "strict" if mode == "r" else "backslashreplace"
    return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors, line_buffering=fd == 2)


def _usable(stream: Any) -> bool:
    """Whether a sys stream can still be written (user code may close or replace it)."""
    try:
        return stream is not None and not stream.closed
    except Exception:
        return True


def _flush(stream: Any) -> None:
    """Flushes a sys stream user code may have replaced with anything."""
    try:
        if stream is not None:
            stream.flush()
    except Exception:
        pass


def _write_fd(fd: int, text: str) -> None:
    """Writes all of `text` to `fd` (used for tracebacks into the cell's stderr)."""
    data = memoryview(text.encode("utf-8", "backslashreplace"))
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


class Agent:
    """The session's state and the main thread's handling of host messages."""

    def __init__(self, host_in: int, host_out: int, diag: int, devnull: int) -> None:
        self.diag = diag
        self.devnull = devnull
        self.channel = Channel(host_out, self.die)
        self.interrupts = Interrupts(threading.get_ident())
        self.calls = Calls()
        self.inbox: "queue.SimpleQueue[dict[str, Any]]" = queue.SimpleQueue()
        self.host_in = host_in
        self.max_load = DEFAULT_MAX_LOAD_BYTES
        self.max_prompt = DEFAULT_MAX_PROMPT_BYTES
        self.tools: dict[str, _AnyFunc] = {}
        #: index → (handle, value its name holds)
        self.contexts: dict[int, tuple[ContextFile, Any]] = {}
        self.answer = new_answer()
        self.api = self._api()
        self.scaffold: dict[str, Any] = {}
        self.globals = new_namespace()
        self._rebuild_scaffold()
        self.max_output = DEFAULT_MAX_OUTPUT_BYTES
        #: The running cell's output, and the lock under which fd 1 and 2
        #: are pointed at it or away from it (main thread and watchdog).
        self.output: Optional[CellOutput] = None
        self.output_lock = threading.Lock()
        #: Output files made ahead for the next cell.
        self.spare: Optional[CellOutput] = None
        #: Output frames of the last cell that go out with its `done`.
        self.unsent = b""
        self.sources: "collections.deque[str]" = collections.deque()

    # -- lifecycle

    def die(self, why: str, code: int = 1) -> None:
        """Ends the agent with `why` on its diagnostic descriptor."""
        _write_fd(self.diag, "rlm-sandbox agent: %s\n" % why)
        os._exit(code)

    def start(self) -> None:
        """Starts the reader thread and the output watchdog."""
        threading.Thread(target=self._read_host, name="rlm-reader", daemon=True).start()
        threading.Thread(target=self._watch_output, name="rlm-watch", daemon=True).start()

    def serve(self) -> None:
        """The main thread: host messages one at a time, forever."""
        while True:
            self.handle(self.inbox.get())

    # -- the reader thread

    def _read_host(self) -> None:
        """Reads host frames: answers and interrupts are handled here (they
        must get through while a cell runs); the rest goes to the main
        thread. The host's end of file ends the agent."""
        try:
            stream = open(self.host_in, "rb", buffering=CHUNK, closefd=False)
            while True:
                frame = read_frame(stream, MAX_HOST_FRAME)
                if frame is None:
                    os._exit(0)
                self._route(frame)
        except EOFError:
            os._exit(0)
        except FrameError as e:
            self.die("refused a frame from the host: %s" % e)
        except BaseException:
            self.die("the reader thread failed:\n" + traceback.format_exc())

    def _route(self, frame: tuple[int, bytes]) -> None:
        """One host frame to where it is handled."""
        kind, payload = frame
        if kind != JSON:
            raise FrameError("a frame of type 0x%02x from the host" % kind)
        try:
            msg = json.loads(payload)
        except ValueError as e:
            raise FrameError("a J frame that is not JSON: %s" % e) from None
        if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
            raise FrameError("a J frame that is not an object with a t")
        t = msg["t"]
        if t == "call_result":
            self.calls.resolve(msg)
        elif t == "interrupt":
            if isinstance(msg.get("cell"), int):
                self.interrupts.request(msg["cell"])
        else:
            self.inbox.put(msg)

    # -- the main thread's dispatch

    def handle(self, msg: dict[str, Any]) -> None:
        """One queued message. An agent bug answers the request with an
        error rather than leave the host waiting."""
        t = msg["t"]
        handler = self.HANDLERS.get(t)
        try:
            if handler is None:
                raise ValueError("unknown message %r" % t)
            handler(self, msg)
        except BaseException as e:
            detail = "%s: %s" % (type(e).__name__, e)
            if t == "hello":
                self.die("hello failed:\n" + traceback.format_exc())
            elif t == "exec" and isinstance(msg.get("cell"), int):
                _write_fd(self.diag, "rlm-sandbox agent: exec failed: %s\n" % detail)
                self._send_done(msg["cell"], "error", None)
            elif isinstance(msg.get("req"), int):
                self._reply(msg["req"], False, error=detail)
            else:
                _write_fd(self.diag, "rlm-sandbox agent: ignored %r: %s\n" % (t, detail))

    def _reply(self, req: int, ok: bool, **fields: Any) -> None:
        """A `reply` to request `req`."""
        self.channel.send_json({"t": "reply", "req": req, "ok": ok, **fields})

    def on_hello(self, msg: dict[str, Any]) -> None:
        """Sets the session's limits, tools and contexts; answers `ready`."""
        self.channel.max_frame = _positive(msg.get("max_frame"), DEFAULT_MAX_FRAME)
        self.max_load = _positive(msg.get("max_load_bytes"), DEFAULT_MAX_LOAD_BYTES, zero=True)
        self.max_prompt = _positive(msg.get("max_prompt_bytes"), DEFAULT_MAX_PROMPT_BYTES)
        self.max_output = _positive(msg.get("max_output_bytes"), DEFAULT_MAX_OUTPUT_BYTES)
        self.tools = self._make_tools(msg.get("tools") or [])
        self.contexts = {}
        for spec in msg.get("contexts") or []:
            self._load_context(spec, strict=False)
        self.answer = new_answer()
        self.globals = new_namespace()
        self._rebuild_scaffold()
        version = "%d.%d.%d" % sys.version_info[:3]
        self.channel.send_json({"t": "ready", "python": version, "names": list(self.scaffold)})

    def on_exec(self, msg: dict[str, Any]) -> None:
        """Runs one cell; its output, then `done`."""
        cell, code = msg.get("cell"), msg.get("code")
        if not isinstance(cell, int) or not isinstance(code, str):
            raise ValueError("exec needs cell (int) and code (str)")
        status, final = self.run_cell(cell, code)
        self._send_done(cell, status, final)
        self._prepare_output()

    def on_vars(self, msg: dict[str, Any]) -> None:
        self._reply(msg["req"], True, vars=self.user_vars())

    def on_get(self, msg: dict[str, Any]) -> None:
        """The type and (bounded) repr of one user global."""
        name = msg.get("name")
        limit = min(_positive(msg.get("max_bytes"), CHUNK), self.channel.max_frame - FRAME_SLACK)
        if not isinstance(name, str) or name not in self.globals:
            self._reply(msg["req"], False, error="no variable named %r" % (name,))
            return
        value = self.globals[name]
        text, cut = bounded_repr(value, limit)
        self._reply(msg["req"], True, type=type(value).__name__, repr=text, truncated=cut)

    def on_add_context(self, msg: dict[str, Any]) -> None:
        """Opens and loads one more context; defines its names now."""
        try:
            index, loaded = self._load_context(msg.get("context"), strict=True)
        except ContextError as e:
            self._reply(msg["req"], False, error=str(e))
            return
        self._rebuild_scaffold()
        self._restore_names()
        self._reply(msg["req"], True, name="context_%d" % index, loaded=loaded)

    def on_reset(self, msg: dict[str, Any]) -> None:
        """Fresh user globals, with the sandbox's names and every context."""
        self.answer.clear()
        self.answer.update(new_answer())
        self.globals = new_namespace()
        self._restore_names()
        self._reply(msg["req"], True)

    HANDLERS: dict[str, Callable[["Agent", dict[str, Any]], None]] = {
        "hello": on_hello,
        "exec": on_exec,
        "vars": on_vars,
        "get": on_get,
        "add_context": on_add_context,
        "reset": on_reset,
    }

    # -- cells

    def run_cell(self, cell: int, code: str) -> tuple[str, Optional[str]]:
        """Runs `code` with its own output files: (status, final answer)."""
        self._ensure_std_streams()
        output = self._start_output(cell)
        if output is None:
            return "error", None
        try:
            status = self._execute(cell, code)
            final = self._take_answer()
            self._restore_names()
        finally:
            self._end_output(output)
        return status, final

    def _execute(self, cell: int, code: str) -> str:
        """Compiles and runs the cell; a failure's traceback goes to its stderr."""
        filename = "%s%d>" % (_CELL_PREFIX, cell)
        self._remember_source(filename, code)
        try:
            compiled = compile(code, filename, "exec", dont_inherit=True)
        except Exception as e:
            self._print_exception(e)
            return "error"
        signal.signal(signal.SIGINT, self.interrupts.handler)
        failure = self._run_user(cell, compiled)
        if failure is None:
            return "ok"
        self._print_exception(failure)
        return "interrupted" if isinstance(failure, KeyboardInterrupt) else "error"

    def _remember_source(self, filename: str, code: str) -> None:
        """Keeps the cell's source for tracebacks (linecache), for the last
        KEPT_SOURCES cells only: a long session must not keep all its code."""
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        self.sources.append(filename)
        while len(self.sources) > KEPT_SOURCES:
            linecache.cache.pop(self.sources.popleft(), None)

    @_protocol
    def _run_user(self, cell: int, compiled: types.CodeType) -> Optional[BaseException]:
        """exec of user code, the only place interrupts are allowed. Every
        exception is caught here: SystemExit is an error of the cell, not
        the end of the session."""
        try:
            self.interrupts.enter(cell)
            self.interrupts.check()
            exec(compiled, self.globals)
        except BaseException as e:
            self.interrupts.leave()
            return e
        self.interrupts.leave()
        return None

    def _print_exception(self, exc: BaseException) -> None:
        """The user's traceback, after what the cell printed, on its stderr."""
        _flush(sys.stdout)
        _flush(sys.stderr)
        try:
            text = format_user_exception(exc)
        except Exception as e:
            text = "%s (its traceback could not be formatted: %s)\n" % (type(exc).__name__, type(e).__name__)
        _write_fd(2, text)

    def _ensure_std_streams(self) -> None:
        """Makes print work again if user code closed or removed sys.stdout/stderr."""
        if not _usable(sys.stdout):
            sys.stdout = _text_stream(1, "w")
        if not _usable(sys.stderr):
            sys.stderr = _text_stream(2, "w")

    def _prepare_output(self) -> None:
        """Makes the next cell's output files now, after this cell's `done`
        went out, while the host reads it (they cost a dozen system calls)."""
        if self.spare is None:
            try:
                self.spare = CellOutput()
            except OSError:
                pass  # Made (or reported) when the next cell starts.

    def _start_output(self, cell: int) -> Optional[CellOutput]:
        """The cell's output files on fd 1 and fd 2."""
        output, self.spare = self.spare, None
        try:
            output = output or CellOutput()
        except OSError as e:
            # Too many open files, most likely: say so in the cell's stderr.
            self.channel.send(STDERR, ("rlm-sandbox: cannot create the cell's output files: %s\n" % e).encode())
            return None
        output.cell = cell
        with self.output_lock:
            os.dup2(output.files[0], 1)
            os.dup2(output.files[1], 2)
            self.output = output
        return output

    def _end_output(self, output: CellOutput) -> None:
        """Points fd 1 and 2 back at /dev/null, then sends what the cell
        wrote (a thread still printing now prints into /dev/null)."""
        _flush(sys.stdout)
        _flush(sys.stderr)
        with self.output_lock:
            os.dup2(self.devnull, 1)
            os.dup2(self.devnull, 2)
            self.output = None
        try:
            self.unsent = output.send(self.channel, self.max_output)
        finally:
            output.close()

    def _watch_output(self) -> None:
        """The watchdog thread: a running cell whose output passes the
        host's ceiling has fd 1 and 2 pointed at /dev/null (its files stop
        growing in the sandbox's memory) and the host is told with
        `output_limit`, which interrupts the cell as a timeout does."""
        while True:
            time.sleep(WATCH_EVERY)
            output = self.output
            if output is None or output.limited:
                continue
            try:
                size = output.size()
            except OSError:
                continue  # The cell ended and closed its files meanwhile.
            if size <= self.max_output:
                continue
            with self.output_lock:
                if self.output is not output:
                    continue
                os.dup2(self.devnull, 1)
                os.dup2(self.devnull, 2)
                output.limited = True
                # Under the lock: the cell's `done` cannot go out first.
                self.channel.send_json({"t": "output_limit", "cell": output.cell, "bytes": size})

    def _send_done(self, cell: int, status: str, final: Optional[str]) -> None:
        """The cell's `done`, in one write with its small output's frames."""
        before, self.unsent = self.unsent, b""
        self.channel.send_json({"t": "done", "cell": cell, "status": status, "final_answer": final}, before)

    # -- answers

    def _take_answer(self) -> Optional[str]:
        """The cell's final answer, if `answer["ready"]` is set (on the
        sandbox's dict, or on a dict user code bound to `answer`); the
        answer is then reset, so an old answer never ends a later task."""
        canon, bound = self.answer, self.globals.get("answer")
        source = canon if _is_true(canon.get("ready")) else None
        if source is None and isinstance(bound, dict) and bound is not canon and _is_true(bound.get("ready")):
            source = bound
        if source is None:
            if isinstance(bound, dict) and bound is not canon:
                # Rebound to a plain dict: keep its content, as the reference library does.
                canon.clear()
                canon.update(bound)
            canon.setdefault("content", "")
            canon.setdefault("ready", False)
            return None
        final = self._final_text(source.get("content", ""))
        canon.clear()
        canon.update(new_answer())
        return final

    def _final_text(self, content: Any) -> Optional[str]:
        """str(content), cut to what fits in the `done` frame."""
        try:
            text = str(content)
        except Exception as e:
            _write_fd(2, "rlm-sandbox: answer['content'] cannot be made a string: %s: %s\n" % (type(e).__name__, e))
            return None
        limit = self.channel.max_frame - FRAME_SLACK
        data = text.encode("utf-8", "replace")
        if len(data) <= limit:
            return text
        _write_fd(2, "rlm-sandbox: the final answer (%d bytes) was cut to the frame limit (%d bytes)\n" % (len(data), limit))
        return data[:limit].decode("utf-8", "ignore")

    def final(self, value: Any) -> str:
        """FINAL(x): x, as a string, is the final answer."""
        text = str(value)
        self.answer["content"] = text
        self.answer["ready"] = True
        return text

    def final_var(self, variable_name: Any) -> str:
        """FINAL_VAR(name): the user variable `name` is the final answer.
        As in the reference library, the name is stripped of spaces and
        quotes, and a missing one gives an error string (no answer)."""
        if not isinstance(variable_name, str):
            return self.final(variable_name)
        name = variable_name.strip().strip("\"'")
        if name not in self.globals:
            available = [n for n, _ in self._user_items()]
            if available:
                return ("Error: Variable '%s' not found. Available variables: %s. "
                        "You must create and assign a variable BEFORE calling FINAL_VAR on it." % (name, available))
            return ("Error: Variable '%s' not found. No variables have been created yet. "
                    "You must create and assign a variable in a REPL block BEFORE calling FINAL_VAR on it." % name)
        return self.final(self.globals[name])

    def show_vars(self) -> str:
        """SHOW_VARS(): the user's variables and their types, as the reference library words it."""
        available = {name: type(value).__name__ for name, value in self._user_items()}
        if not available:
            return "No variables created yet. Use ```repl``` blocks to create variables."
        return "Available variables: %s" % (available,)

    # -- names

    def _user_items(self) -> list[tuple[str, Any]]:
        """User globals: not starting with "_", not the sandbox's own names."""
        items = []
        for name, value in list(self.globals.items()):
            if not isinstance(name, str) or name.startswith("_"):
                continue
            if self.scaffold.get(name, _MISSING) is value:
                continue
            items.append((name, value))
        return items

    def user_vars(self) -> list[dict[str, Any]]:
        """`vars`: [{name, type, size}], as many as fit in one frame."""
        budget = self.channel.max_frame - FRAME_SLACK
        out = []
        for name, value in self._user_items():
            entry = {"name": name, "type": type(value).__name__, "size": _size_of(value)}
            budget -= len(encode_json(entry)) + 1
            if budget < 0:
                break
            out.append(entry)
        return out

    def _rebuild_scaffold(self) -> None:
        """The sandbox's names and the values they must hold."""
        scaffold: dict[str, Any] = {}
        indexes = sorted(self.contexts)
        if indexes:
            scaffold["context"] = self.contexts[indexes[0]][1]
        for i in indexes:
            scaffold["context_%d" % i] = self.contexts[i][1]
        if indexes:
            scaffold["ctx"] = self.contexts[indexes[0]][0]
        scaffold["ctxs"] = tuple(self.contexts[i][0] for i in indexes)
        for name, fn in self.api.items():
            scaffold.setdefault(name, fn)
        for name, fn in self.tools.items():
            scaffold.setdefault(name, fn)
        scaffold["answer"] = self.answer
        self.scaffold = scaffold
        self._restore_names()

    def _restore_names(self) -> None:
        """Puts back every sandbox name user code rebound or deleted."""
        g = self.globals
        for name, value in self.scaffold.items():
            if g.get(name, _MISSING) is not value:
                g[name] = value

    def _load_context(self, spec: Any, strict: bool) -> tuple[int, bool]:
        """Opens a context and sets what its name holds: the value, or a
        note when it is above max_load_bytes. In `hello` (not strict) a
        broken context becomes a note too, so the session still starts."""
        handle = open_context(spec) if strict else self._open_lenient(spec)
        if handle is None:
            return -1, False
        name = "context_%d" % handle.index
        position = sum(1 for i in self.contexts if i < handle.index)
        ref = "ctx" if position == 0 else "ctxs[%d]" % position
        if handle.size > self.max_load:
            self.contexts[handle.index] = (handle, not_loaded_text(name, ref, handle.size, self.max_load))
            return handle.index, False
        try:
            value, loaded = load_value(handle), True
        except ContextError as e:
            if strict:
                raise
            value, loaded = "[%s could not be loaded: %s. Read the raw file through %s]" % (name, e, ref), False
        self.contexts[handle.index] = (handle, value)
        return handle.index, loaded

    def _open_lenient(self, spec: Any) -> Optional[ContextFile]:
        """open_context for `hello`: a failure is reported on the diagnostic fd."""
        try:
            return open_context(spec)
        except ContextError as e:
            _write_fd(self.diag, "rlm-sandbox agent: %s\n" % e)
            return None

    def _make_tools(self, specs: Any) -> dict[str, _AnyFunc]:
        """One function per declared tool; invalid declarations are skipped
        (reported on the diagnostic fd)."""
        tools: dict[str, _AnyFunc] = {}
        for spec in specs if isinstance(specs, list) else []:
            name = spec.get("name") if isinstance(spec, dict) else None
            params = spec.get("params") if isinstance(spec, dict) else None
            try:
                if not isinstance(name, str) or self._reserved(name) or not isinstance(params, list):
                    raise ValueError("tool %r clashes with a sandbox name or has no params list" % (name,))
                tools[name] = make_tool(name, params, self.call_tool)
            except ValueError as e:
                _write_fd(self.diag, "rlm-sandbox agent: skipped a tool: %s\n" % e)
        return tools

    def _reserved(self, name: str) -> bool:
        """Whether `name` is one of the sandbox's own names (tools may not take it)."""
        return name in self.api or name in ("answer", "context", "ctx", "ctxs") \
            or re.fullmatch(r"context_[0-9]+", name) is not None

    # -- calls

    def _api(self) -> dict[str, _AnyFunc]:
        """The functions user code gets, as plain functions (no agent object
        in sight, clean help()): queries, answers, SHOW_VARS."""
        agent = self

        def llm_query(prompt: str, model: Optional[str] = None) -> str:
            """Asks the model one prompt; returns its answer (or "Error: ...")."""
            return agent.query("llm_query", [_prompt(prompt, "llm_query")], _model(model))[0]

        def llm_query_batched(prompts: list[str], model: Optional[str] = None) -> list[str]:
            """Asks the model several prompts at once; answers in order."""
            return agent.query("llm_query", _prompts(prompts, "llm_query_batched"), _model(model))

        def rlm_query(prompt: str, model: Optional[str] = None) -> str:
            """A recursive RLM sub-call (a plain llm_query where the host has none)."""
            return agent.query("rlm_query", [_prompt(prompt, "rlm_query")], _model(model))[0]

        def rlm_query_batched(prompts: list[str], model: Optional[str] = None) -> list[str]:
            """Several recursive RLM sub-calls at once; answers in order."""
            return agent.query("rlm_query", _prompts(prompts, "rlm_query_batched"), _model(model))

        def FINAL(value: Any) -> str:
            """Makes `value` (as a string) the final answer of the task."""
            return agent.final(value)

        def FINAL_VAR(variable_name: str) -> str:
            """Makes the variable named `variable_name` the final answer."""
            return agent.final_var(variable_name)

        def SHOW_VARS() -> str:
            """Returns the variables you created and their types."""
            return agent.show_vars()

        return {
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "SHOW_VARS": SHOW_VARS,
        }

    def query(self, kind: str, prompts: list[str], model: Optional[str]) -> list[str]:
        """Answers for `prompts`: one call frame, or several when one would
        exceed max_frame; a prompt that fits in no frame gets an error."""
        answers: list[Optional[str]] = [None] * len(prompts)
        groups = self._pack(kind, prompts, model, answers)
        outcomes = self._await([
            {"kind": kind, "model": model, "prompts": [prompts[i] for i in group]} for group in groups
        ])
        for group, outcome in zip(groups, outcomes):
            for i, text in zip(group, outcome_texts(outcome, len(group))):
                answers[i] = text
        return [a if a is not None else "Error: no answer" for a in answers]

    def _pack(self, kind: str, prompts: list[str], model: Optional[str],
              answers: list[Optional[str]]) -> list[list[int]]:
        """Groups prompt indexes into frames under max_frame; sets the
        answer of a prompt that fits in none."""
        limit = self.channel.max_frame - FRAME_SLACK
        base = len(encode_json({"t": "call", "call": 0, "kind": kind, "model": model, "prompts": []}))
        groups: list[list[int]] = []
        current: list[int] = []
        size = base
        for i, prompt in enumerate(prompts):
            cost = len(encode_json(prompt)) + 1
            if base + cost > limit:
                answers[i] = self._too_big(prompt, limit)
                continue
            if current and size + cost > limit:
                groups.append(current)
                current, size = [], base
            current.append(i)
            size += cost
        if current:
            groups.append(current)
        return groups

    def _too_big(self, prompt: str, limit: int) -> str:
        """The error for a prompt no frame can carry (the host's wording when
        it is above max_prompt_bytes)."""
        n = len(prompt.encode("utf-8", "replace"))
        if n > self.max_prompt:
            return "Error: prompt of %d bytes is above the limit of %d (RLM_LLM_MAX_PROMPT_BYTES)" % (n, self.max_prompt)
        return "Error: prompt of %d bytes does not fit in a frame of %d bytes" % (n, limit)

    def _await(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sends the calls, then waits for all of them. The wait is user
        code for interrupts: a KeyboardInterrupt ends it, and the calls
        are forgotten (their late results ignored)."""
        sent: list[tuple[int, Waiter]] = []
        try:
            for fields in requests:
                sent.append(self.calls.submit(self.channel, fields))
            self.interrupts.check()
            for _, waiter in sent:
                waiter.event.wait()
        finally:
            for call, waiter in sent:
                if not waiter.event.is_set():
                    self.calls.forget(call)
        self.interrupts.check()
        return [waiter.outcome for _, waiter in sent]

    def call_tool(self, name: str, args: dict[str, Any]) -> Any:
        """A tool call: its single result (any JSON value), or "Error: ..."."""
        fields = {"kind": "tool", "model": None, "name": name, "args": args}
        try:
            size = len(encode_json(fields))
        except (TypeError, ValueError) as e:
            raise TypeError("%s(): arguments must be JSON values: %s" % (name, e)) from None
        if size + FRAME_SLACK > self.channel.max_frame:
            return "Error: the arguments of %s() are %d bytes; the frame limit is %d" % (name, size, self.channel.max_frame)
        outcome = self._await([fields])[0]
        if isinstance(outcome.get("error"), str):
            return "Error: " + outcome["error"]
        results = outcome.get("results")
        return results[0] if isinstance(results, list) and results else None


def _positive(value: Any, default: int, zero: bool = False) -> int:
    """An int limit from `hello`, or `default` when absent or nonsense."""
    if isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (zero and value == 0)):
        return value
    return default


def _prompt(prompt: Any, fn: str) -> str:
    """A prompt must be a str: anything else is the user's TypeError."""
    if not isinstance(prompt, str):
        raise TypeError("%s() prompt must be str, not %s" % (fn, type(prompt).__name__))
    return prompt


def _prompts(prompts: Any, fn: str) -> list[str]:
    """A batch: a list (or other iterable, not a str) of str."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
        raise TypeError("%s() prompts must be a list of str, not %s" % (fn, type(prompts).__name__))
    out = list(prompts)
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError("%s() prompts[%d] must be str, not %s" % (fn, i, type(p).__name__))
    return out


def _model(model: Any) -> Optional[str]:
    if model is not None and not isinstance(model, str):
        raise TypeError("model must be str or None, not %s" % type(model).__name__)
    return model


# --- Start ---------------------------------------------------------------------------


def _setup_descriptors() -> tuple[int, int, int, int]:
    """Moves the host channel off fds 0 and 1 (user code must not reach it
    by accident), keeps the sandbox's stderr as the diagnostic channel,
    and points fds 0 and 1 at /dev/null. (host_in, host_out, diag, devnull)."""
    host_in, host_out, diag = _private_fd(0), _private_fd(1), _private_fd(2)
    null = os.open("/dev/null", os.O_RDWR)
    devnull = _private_fd(null)
    os.close(null)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    return host_in, host_out, diag, devnull


def _setup_streams() -> None:
    """sys.stdin/stdout/stderr as the cells need them (see _text_stream)."""
    sys.stdin = _text_stream(0, "r")
    sys.stdout = _text_stream(1, "w")
    sys.stderr = _text_stream(2, "w")
    sys.argv = [""]


def main() -> None:
    """Sets up the channels and serves the host until it closes its end."""
    try:
        fds = _setup_descriptors()
    except OSError as e:
        os.write(2, ("rlm-sandbox agent: cannot set up its descriptors: %s\n" % e).encode())
        os._exit(1)
    _setup_streams()
    try:
        import faulthandler
        faulthandler.enable(file=fds[2], all_threads=True)
    except Exception:
        pass
    agent = Agent(*fds)
    signal.signal(signal.SIGINT, agent.interrupts.handler)
    agent.start()
    try:
        agent.serve()
    except BaseException:
        agent.die("the main loop failed:\n" + traceback.format_exc())


#: Keeps this module alive once sys.modules["__main__"] is the user's.
_SELF = sys.modules.get(__name__)

if __name__ == "__main__":
    main()
