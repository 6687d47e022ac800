"""When an interrupt may land: only in user code, never in the agent's own
frame handling (docs/PROTOCOL.md, "Agent frames")."""

from __future__ import annotations

import os
import time

from . import sync

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    import types
    from typing import Any, Callable, Optional

    AnyFunc = Callable[..., Any]
else:
    import _signal  # signal without its enums (enum costs ~1 ms of every start)


#: The signal an interrupt is (the host's `interrupt`, and SIGINT user code sends itself).
SIGINT: int = _signal.SIGINT


# --- Interrupt safety --------------------------------------------------------

#: Code of the agent's protocol handling: an interrupt that arrives while
#: any of these is on the stack (inside the user code's innermost frames)
#: is deferred, so it can never cut a frame in half or lose a call.
_PROTOCOL_CODES: set[types.CodeType] = set()


def protocol(fn: AnyFunc) -> AnyFunc:
    """Marks `fn` as protocol handling (see `_PROTOCOL_CODES`)."""
    _PROTOCOL_CODES.add(fn.__code__)
    return fn


def _agent_file() -> str:
    """The file name this module's code carries."""
    return _agent_file.__code__.co_filename


#: A file name of the agent's, given to code it compiles (tool functions)
#: so that tracebacks leave that code out too.
AGENT_FILE = _agent_file()
_AGENT_DIR = os.path.dirname(AGENT_FILE)


def is_agent_file(filename: str) -> bool:
    """Whether code from `filename` is the agent's (any of its modules)."""
    return os.path.dirname(filename) == _AGENT_DIR
CELL_PREFIX = "<cell "
#: File names of user code that is not a cell's (a script's: script.py).
USER_FILES: set[str] = set()


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
        if code.co_filename.startswith(CELL_PREFIX) or code.co_filename in USER_FILES:
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
        self.lock = sync.Token()
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
        has not started, or is between its setup and its code (the code
        then starts interrupted; for a cell that has ended it is dropped
        at the next cell's start)."""
        with self.lock:
            if self._interruptible(cell):
                self._send_sigint(cell)
                sync.start("rlm-interrupt", self._resend, cell)
            elif cell >= self.last_started and self.delivered != cell:
                self.early = cell

    def _interruptible(self, cell: int) -> bool:
        """Whether `cell` runs user code and has not been interrupted yet (under the lock)."""
        return self.in_user and self.cell == cell and self.delivered != cell

    def _send_sigint(self, cell: int) -> None:
        self.wanted = cell
        _signal.pthread_kill(self.main_ident, SIGINT)

    def _resend(self, cell: int) -> None:
        """Signals again until the interrupt has landed (see the class doc)."""
        deadline = time.monotonic() + self.RESEND_FOR
        while time.monotonic() < deadline:
            time.sleep(self.RESEND)
            with self.lock:
                if not self._interruptible(cell):
                    return
                self._send_sigint(cell)

    @protocol
    def enter(self, cell: int) -> None:
        """The main thread starts running `cell`'s user code."""
        with self.lock:
            self.cell = cell
            self.last_started = max(self.last_started, cell)
            self.pending = self.early == cell
            self.early = None
            self.in_user = True

    @protocol
    def leave(self) -> None:
        """The main thread is back in the agent: no interrupt lands any more."""
        with self.lock:
            self.in_user = False
            self.pending = False
            self.cell = None

    def check(self) -> None:
        """A safe point in the main thread: raise a deferred interrupt."""
        if self.pending and self.in_user and sync.get_ident() == self.main_ident:
            self.pending = False
            self.delivered = self.cell
            raise KeyboardInterrupt

    def install(self) -> None:
        """Makes `handler` SIGINT's handler (at the start, and again where
        user code may have replaced it)."""
        _signal.signal(SIGINT, self.handler)

    def installed(self) -> bool:
        """Whether `handler` is SIGINT's handler (no system call)."""
        return _signal.getsignal(SIGINT) == self.handler

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
