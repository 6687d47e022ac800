"""The `rlm-sandbox session` process and its JSON-lines protocol.

Whoever holds the read lock reads the process's stdout: a requester reads
until its own response arrives (no thread hands it over: a wake-up less
per request, tens of microseconds on a VM), and a reader thread reads
while no request is in flight (the `ready` event, calls from code still
running between requests, the process's end). Responses complete the
pending request with their id, `call` events go to the call handler.
Another thread keeps the tail of stderr for error messages (and logs it).
Everything the process says is parsed strictly: a line that is not a
JSON object, or a response nobody asked for, is a ProtocolError that
ends the session (the process is killed), never a hang.

Ending: `close()` asks politely (the `close` request), then closes stdin
(end of input also ends a session), then kills. The same runs from a
weakref finalizer and at interpreter exit, and a client killed outright
closes the pipe, which ends the session and its sandbox."""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import select
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence

from .channels import Channel, PipeChannel
from .errors import ProtocolError, SessionDead

log = logging.getLogger("rlm_sandbox")

JSONDict = Dict[str, Any]
# A line from the session is at most a cell (output is capped by the
# session) plus framing; far above that is not our session talking.
MAX_LINE = 256 * 1024 * 1024
STDERR_LINES = 40
# How long the reader thread leaves stdout to requesters after one: back
# to back requests (an RLM's steps) never wake it.
READER_RESUME = 0.05


class _Lines:
    """Lines of the session's stdout, read with os.read into a buffer of
    its own, so that the reading can change hands between threads (a
    stream's private buffer would hide what it already holds from poll).
    One reader at a time: the caller holds the read lock."""

    def __init__(self, fd: int, read: Callable[[int], bytes]) -> None:
        self.fd = fd
        self._read = read
        self._buf = bytearray()
        self._scanned = 0

    def take(self) -> Optional[bytes]:
        """The next whole buffered line; ProtocolError above MAX_LINE."""
        i = self._buf.find(b"\n", self._scanned)
        if i < 0:
            self._scanned = len(self._buf)
            if len(self._buf) > MAX_LINE:
                raise ProtocolError(f"the session wrote a line above {MAX_LINE} bytes")
            return None
        line = bytes(self._buf[: i + 1])
        del self._buf[: i + 1]
        self._scanned = 0
        if len(line) > MAX_LINE + 1:
            raise ProtocolError(f"the session wrote a line above {MAX_LINE} bytes")
        return line

    def fill(self) -> bool:
        """One read (blocking until there is something); False at the end."""
        data = self._read(1 << 16)
        self._buf += data
        return bool(data)


def _readable(fd: int, timeout: float) -> bool:
    """Whether `fd` becomes readable (or ends) within `timeout` seconds."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(1, math.ceil(timeout * 1000))))


class SessionProcess:
    """A running `rlm-sandbox session`; thread-safe for one requester at a time."""

    def __init__(
        self,
        argv: List[str],
        env: Mapping[str, str],
        on_call: Callable[[JSONDict], None],
        on_ready: Optional[Callable[[JSONDict], None]] = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self._start(PipeChannel(argv, env, pass_fds), on_call, on_ready)

    @classmethod
    def over(
        cls, channel: Channel, on_call: Callable[[JSONDict], None], on_ready: Optional[Callable[[JSONDict], None]]
    ) -> "SessionProcess":
        """The session protocol over `channel` (a server's connection)."""
        self = cls.__new__(cls)
        self._start(channel, on_call, on_ready)
        return self

    def _start(
        self, channel: Channel, on_call: Callable[[JSONDict], None], on_ready: Optional[Callable[[JSONDict], None]]
    ) -> None:
        self._on_call = on_call
        # Runs on the reader thread before anything after `ready` is read:
        # a call the code makes at once finds its answerer in place.
        self._on_ready = on_ready
        self._channel = channel
        self._write_lock = threading.Lock()
        #: Lines written while held (`hold`): they go out in one write
        #: with the next `release` or `wait`, one wake-up of the session
        #: instead of one per request.
        self._held: Optional[bytearray] = None
        self._pending: Dict[int, "Future[JSONDict]"] = {}
        self._pending_lock = threading.Lock()
        self._next_id = 0
        self._first: "Future[JSONDict]" = Future()
        self._stderr: Deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.dead: Optional[str] = None
        self._lines = _Lines(channel.fd, channel.read)
        #: Held by whoever reads stdout (see the module's docstring).
        self._read_lock = threading.Lock()
        #: Requests whose requester reads (or is about to): the reader
        #: thread leaves stdout to them.
        self._requesters = 0
        #: Stdout ended or broke: nobody reads any more.
        self._ended = False
        # A byte here wakes the reader thread from its poll: a requester
        # wants stdout.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stdout_thread = threading.Thread(target=self._read_idle, name="rlm-sandbox-stdout", daemon=True)
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="rlm-sandbox-stderr", daemon=True)
        # stderr's first: the stdout reader joins it when the process ends.
        self._stderr_thread.start()
        self._stdout_thread.start()

    @property
    def pid(self) -> int:
        """The session process's pid (through a server: the server's)."""
        return self._channel.pid

    def stderr_tail(self) -> str:
        return "".join(self._stderr)

    def first_line(self, timeout: Optional[float]) -> JSONDict:
        """The `ready` (or `error`) event, or a standby's `standby` event;
        ProtocolError/SessionDead if the process ended or said something
        else first."""
        return self._first.result(timeout=timeout)

    @property
    def first(self) -> "Future[JSONDict]":
        """The first line as a future (a pool waits on many at once)."""
        return self._first

    def set_handlers(self, on_call: Callable[[JSONDict], None], on_ready: Callable[[JSONDict], None]) -> None:
        """A claimed standby's Session takes over its events (before its
        `begin` is written, so nothing can come before)."""
        self._on_call, self._on_ready = on_call, on_ready

    def request(self, op: str, _wait: Optional[float] = None, **fields: Any) -> JSONDict:
        """Sends one request and waits for its response (the session bounds
        every operation's time itself; `_wait` bounds `close`'s). Not
        `timeout`: that is an `exec` field."""
        return self.wait(self.submit(op, **fields), _wait)

    def submit(self, op: str, **fields: Any) -> "Future[JSONDict]":
        """Sends one request without waiting: its response completes the
        future. The session reads its input in order, so requests written
        one after another (a `begin`, then cells) run in that order while
        the client waits once for all of them (pipelining)."""
        if self.dead is not None:
            raise SessionDead(f"the session has ended: {self.dead}", kind="session_dead", stderr=self.stderr_tail())
        future: "Future[JSONDict]" = Future()
        with self._pending_lock:
            self._next_id += 1
            rid = self._next_id
            self._pending[rid] = future
        self.send({"id": rid, "op": op, **fields})
        return future

    def wait(self, future: "Future[JSONDict]", wait: Optional[float] = None) -> JSONDict:
        """Waits for a submitted request's response, reading stdout in this
        thread (a response handed over by the reader thread would cost a
        wake-up); TimeoutError after `wait` seconds. Held lines are written
        first (their answers may be what is waited for)."""
        if self._held is not None:
            self.release()
        with self._pending_lock:
            self._requesters += 1
            # Under the lock: the reader thread closes the pipe under it
            # when it ends (a number written after a close may be reused).
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"r")
                except BlockingIOError:
                    pass  # The pipe is full: the reader is woken already.
        try:
            self._read_until(future, wait)
        finally:
            with self._pending_lock:
                self._requesters -= 1
        return future.result(timeout=0)

    def _read_until(self, future: "Future[JSONDict]", wait: Optional[float]) -> None:
        """Reads stdout until `future` (or every request) is done; TimeoutError
        after `wait` seconds."""
        deadline = None if wait is None else time.monotonic() + wait
        if not self._read_lock.acquire(timeout=-1 if wait is None else wait):
            raise TimeoutError(f"no response within {wait} s")
        try:
            while not future.done() and not self._ended:
                line = self._take()
                if line is not None:
                    self._handle(line)
                    continue
                if deadline is not None:
                    left = deadline - time.monotonic()
                    # poll, not select: a descriptor numbered past 1023 (a
                    # process with many files open) is out of select's range.
                    if left <= 0 or not _readable(self._lines.fd, left):
                        raise TimeoutError(f"no response within {wait} s")
                self._fill()
        finally:
            self._read_lock.release()
        if not future.done():  # the session ended before this request was registered
            future.set_exception(
                SessionDead(f"the session has ended: {self.dead}", kind="session_dead", stderr=self.stderr_tail())
            )

    def send(self, message: JSONDict) -> None:
        """Writes one line (or keeps it with the held ones, see `hold`); a
        closed pipe means the session is gone."""
        data = (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")
        with self._write_lock:
            if self._held is not None:
                self._held += data
                return
            written = self._write(data)
        if not written:
            self._write_failed()

    def hold(self) -> None:
        """Keeps the lines sent from now on until `release` (or a `wait`,
        which releases first: nothing held is ever waited for), then writes
        them at once: a claim's `begin` and the requests written behind it
        reach the session in one write and wake it once, not once each."""
        with self._write_lock:
            if self._held is None:
                self._held = bytearray()

    def release(self) -> None:
        """Writes the held lines (if any) and stops holding."""
        with self._write_lock:
            held, self._held = self._held, None
            written = self._write(bytes(held)) if held else True
        if not written:
            self._write_failed()

    def _write(self, data: bytes) -> bool:
        """One write of whole lines (under the write lock); False when the
        pipe is closed (the caller fails the session outside the lock)."""
        try:
            self._channel.write(data)
        except (BrokenPipeError, ValueError, OSError):
            return False
        return True

    def _write_failed(self) -> None:
        self._fail(SessionDead("the session process has exited", kind="session_dead", stderr=self.stderr_tail()))

    def _read_idle(self) -> None:
        """The reader thread: reads stdout while no request is in flight,
        until its end. It gives the read lock up as soon as a requester
        wakes it, and takes it again only once requests have paused for
        READER_RESUME."""
        poller = select.poll()
        poller.register(self._lines.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while not self._ended:
                if self._requesters == 0 and self._read_lock.acquire(blocking=False):
                    try:
                        self._read_while_idle(poller)
                    finally:
                        self._read_lock.release()
                else:
                    time.sleep(READER_RESUME)
        finally:
            # Nobody reads any more: the wake pipe goes (a process making
            # thousands of sessions would run out of descriptors).
            with self._pending_lock:
                wake, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in wake:
                os.close(fd)

    def _read_while_idle(self, poller: "select.poll") -> None:
        while not self._ended and self._requesters == 0:
            line = self._take()
            if line is not None:
                self._handle(line)
                continue
            ready = poller.poll()
            if any(fd == self._wake_r for fd, _ in ready):
                os.read(self._wake_r, 4096)
                continue
            if ready:
                self._fill()

    def _take(self) -> Optional[bytes]:
        """The next buffered line (under the read lock); a protocol error ends the session."""
        try:
            return self._lines.take()
        except ProtocolError as e:
            self._broke(e)
            return None

    def _fill(self) -> None:
        """One read of stdout (under the read lock); its end ends the session."""
        try:
            if self._lines.fill():
                return
        except OSError as e:
            self._broke(ProtocolError(f"reading the session failed: {e!r}", stderr=self.stderr_tail()))
            return
        self._ended = True
        why = self._channel.reap()
        self._stderr_thread.join(timeout=2)
        self._fail(SessionDead(why, kind="session_dead", stderr=self.stderr_tail()))

    def _handle(self, line: bytes) -> None:
        """One line (under the read lock); a protocol error ends the session."""
        try:
            self._dispatch(line)
        except ProtocolError as e:
            e.stderr = self.stderr_tail()
            self._broke(e)
        except Exception as e:  # a bug here must not leave requests waiting
            self._broke(ProtocolError(f"reading the session failed: {e!r}", stderr=self.stderr_tail()))

    def _broke(self, error: ProtocolError) -> None:
        """The session said something it must not: it is killed."""
        self._ended = True
        self._kill()
        self._fail(error)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            raise ProtocolError(f"the session wrote a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(msg, dict):
            raise ProtocolError(f"the session wrote a JSON line that is not an object: {line[:200]!r}")
        event = msg.get("event")
        rid = msg.get("id")
        if event is None and rid is None and msg.get("ok") is False and not self._first.done():
            # A server refusing the peer before reading its opening answers
            # with a plain error line (docs/SERVE.md): the first line.
            self._first.set_result(msg)
            return
        if event is not None and not (event in ("ready", "error") and "id" in msg):
            if event == "call":
                self._on_call(msg)
            elif event in ("ready", "error", "standby") and not self._first.done():
                if event == "ready" and self._on_ready is not None:
                    self._on_ready(msg)
                self._first.set_result(msg)
            else:
                raise ProtocolError(f"unexpected event {event!r} from the session")
            return
        # A claimed standby answers its `begin` with a `ready` (or an
        # `error`) event carrying the begin's id: a response like any other.
        if event == "ready" and self._on_ready is not None:
            self._on_ready(msg)
        with self._pending_lock:
            future = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if future is None:
            raise ProtocolError(f"a response to no request: {line[:200]!r}")
        future.set_result(msg)

    def _read_stderr(self) -> None:
        stderr = self._channel.stderr
        if stderr is None:
            return  # a server's connection: the server logs
        for raw in iter(lambda: stderr.readline(64 * 1024), b""):
            text = raw.decode("utf-8", "replace")
            self._stderr.append(text)
            log.warning("%s", text.rstrip("\n"))

    def _fail(self, error: Exception) -> None:
        """Ends every wait with `error`; later requests get SessionDead."""
        if self.dead is None:
            self.dead = str(error).split("\n", 1)[0]
        if not self._first.done():
            self._first.set_exception(error)
        with self._pending_lock:
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(error)

    def mark_dead(self, why: str) -> None:
        """The session reported its sandbox gone (an OOM, a kill)."""
        if self.dead is None:
            self.dead = why

    def _kill(self) -> None:
        self._channel.kill()

    def alive(self) -> bool:
        """The process has not exited (the connection is open)."""
        return self._channel.alive()

    def end_input(self) -> None:
        """Closes the session's stdin without waiting: it then removes its
        sandbox and exits (a pool ends many at once this way)."""
        with self._write_lock:
            self._channel.end_input()

    def terminate(self, grace: float) -> None:
        """Ends the process without the `close` request (a finalizer)."""
        self._channel.terminate(grace)

    def close(self, grace: float = 10.0) -> None:
        """Ends the session and waits for it to remove its sandbox."""
        if self._channel.alive() and self.dead is None:
            try:
                self.request("close", _wait=grace)
            except Exception:
                pass  # Not answering: terminate() below ends it.
        self._channel.terminate(grace)
        self._stdout_thread.join(timeout=grace)
        self.mark_dead("closed")

