"""The agent's message handling: who reads the host's frames, and the
main thread's dispatch of requests (`hello`, `exec`, `vars`, `get`,
`add_context`, `reset`) to their handlers and replies.

Between messages the main thread reads the host's frames itself: a frame
handed from a reader thread to the main thread costs a thread wake-up and
a contended GIL, several times dearer under gVisor than the rest of a
small cell. While it handles a message (runs a cell), the reader thread
reads instead, but only once someone needs it: a call waits for its
result, or a cell is still running at the watchdog's next tick (its
interrupt may come). A cell that makes no call and ends within a tick
never wakes it.

The top layer of the agent (built on script.Scripts, on cell.Cells, on
scaffold.Scaffold): kept apart from cell running so that what the host
may ask, and how each request is answered or refused, reads in one place.
"""

from __future__ import annotations

import os
import select
import sys
from _queue import SimpleQueue

from . import cjson, sync
from .script import Scripts
from .contexts import ContextError
from .namespace import bounded_repr, compile_cell, make_tool, new_answer, new_namespace
from .output import private_fd, write_fd
from .prelude import PreludeFailed, run_prelude
from .wire import (
    Channel,
    CHUNK,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LOAD_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_PROMPT_BYTES,
    FRAME_SLACK,
    FrameError,
    FrameReader,
    FrameTooLarge,
    JSON,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

#: A document with every kind of JSON value a host frame holds, decoded
#: once before `standby` (see `Agent._warm`).
WARM_JSON = '{"t": "hello", "n": [1, -2.5e3, true, false, null], "s": "a\\n\\u00e9\\ud83d\\ude00", "o": {}}'


def agent_traceback() -> str:
    """The exception being handled, with every frame (the agent's own
    failure): traceback is imported only when one happens."""
    import traceback

    return traceback.format_exc()


class Agent(Scripts):
    """The session's state and the main thread's handling of host messages."""

    def __init__(self, host_in: int, host_out: int, diag: int, devnull: int) -> None:
        self.diag = diag
        super().__init__(Channel(host_out, self.die), diag, devnull)
        #: Messages for the main thread the reader thread took.
        self.inbox: SimpleQueue[dict[str, Any]] = SimpleQueue()
        self.host = FrameReader(host_in)
        #: The user's globals the prelude left (taken by `hello`).
        self.prelude_globals: Optional[dict[str, Any]] = None
        #: Who reads `host` (see the module's docstring): holds one token
        #: while the main thread handles a message and the reader thread
        #: has not been started. Whoever pops it (list.pop is atomic under
        #: the GIL) decides: a start takes it, and the main thread taking
        #: it back knows the reader was never started. No lock: under
        #: gVisor each costs a system call (CPython 3.11 reads the clock).
        self._start_token: list[bool] = []
        self._reader_go = sync.Signal()
        self._reader_parked = sync.Signal()
        self._reader_stop = False
        wake_r, wake_w = os.pipe()
        self._wake_r, self._wake_w = private_fd(wake_r), private_fd(wake_w)
        os.close(wake_r)
        os.close(wake_w)

    # -- lifecycle

    def die(self, why: str, code: int = 1) -> None:
        """Ends the agent with `why` on its diagnostic descriptor."""
        write_fd(self.diag, "rlm-sandbox agent: %s\n" % why)
        os._exit(code)

    def start(self) -> None:
        """Starts the (parked) reader thread and the output watchdog."""
        sync.start("rlm-reader", self._read_host)
        sync.start("rlm-watch", self._watch_output)

    def standby(self) -> None:
        """Tells the host the agent is up and waits for `hello`: every
        import, descriptor, thread and handler is in place, so a sandbox
        started before its work is known (a pool's) lacks only the work.
        Sent once, before anything else; the session's prelude, if it has
        one, runs first (prelude.py)."""
        try:
            self.prelude_globals = run_prelude()
        except PreludeFailed as e:
            self.die("the prelude failed:\n%s" % e)
        self._warm()
        self.channel.send_json({"t": "standby"})

    def _warm(self) -> None:
        """Runs once, on throwaway input, what a claim's `hello` and its
        first cell run first: the JSON decoder (the `hello` is the first
        frame the agent reads), the compiler (a cell, a tool's function),
        the tool name check's pattern, and each system call of a cell's
        output files. Their first use costs most (code paged in, a
        pattern compiled; under gVisor a millisecond and more, and a
        system call's first use at each place in the code is a trap the
        Sentry then patches away: up to a millisecond each, measured by
        scripts/bench_first_use.py), and before `standby` nobody waits."""
        cjson.loads(WARM_JSON)
        compile_cell("_w = 1\n_w", "<warm>")
        make_tool("_w", ["a"], lambda name, args: None)
        self._reserved("_w")
        # Throwaway output files, read back as a cell's are (pread) and
        # retired: the first cell's files take their numbers (dup3), as
        # each later cell's do.
        scratch = self._new_output()
        scratch.send(self.channel, 0)  # empty: nothing is sent
        self.retired = scratch.retire()
        # One turn of the reader thread, as a cell's first call (a tool,
        # llm_query) makes: woken (a futex wake), stopped and parked. Its
        # poll is libc's, called here once for certain (the turn may end
        # before the reader polls).
        self._start_token.append(True)
        self.reading_needed()
        self._take_back_reading()
        select.poll().poll(0)
        # The first cell's output files, on fd 1 and 2 from here on, as
        # each later cell's are after the cell before it (off the path):
        # eight system calls fewer in a claim's first cell. Until now fd 2
        # was the sandbox's stderr, where an agent that dies starting says
        # why; from here on it says so on its diagnostic descriptor.
        self._prepare_output()

    def serve(self) -> None:
        """The main thread: host messages one at a time, forever; it reads
        them itself, and hands the reading over while it handles one."""
        while True:
            msg = self._next_message()
            self._hand_over_reading()
            try:
                self.handle(msg)
            finally:
                self._take_back_reading()

    def _next_message(self) -> dict[str, Any]:
        """The main thread's read of the next message it handles (answers and
        interrupts meanwhile are routed as the reader thread routes them).
        The host's end of file ends the agent."""
        while True:
            # empty() first: get_nowait() takes a lock, a system call.
            if not self.inbox.empty():
                return self.inbox.get_nowait()
            try:
                msg = self._route(self.host.read())
            except EOFError:
                os._exit(0)
            except FrameError as e:
                self.die("refused a frame from the host: %s" % e)
            if msg is not None:
                return msg

    # -- who reads the host's frames

    def reading_needed(self) -> None:
        """Starts the reader thread unless the main thread reads (or it runs)."""
        try:
            self._start_token.pop()
        except IndexError:
            return
        self._reader_go.set()

    def _hand_over_reading(self) -> None:
        """The main thread stops reading to handle a message: a call still
        waiting for its result (from a thread of an earlier cell) needs the
        reader thread at once. (A start refused just before is made good
        here or at the watchdog's next tick.)"""
        self._start_token.append(True)
        if self.calls.waiting():
            self.reading_needed()

    def _take_back_reading(self) -> None:
        """The main thread reads again: the reader thread, if it was
        started, is stopped first (woken by a byte on its wake pipe) and
        has parked before the main thread reads. Runs after the reply went
        out, while the host reads it."""
        try:
            self._start_token.pop()
            return  # Never started, and now it cannot be.
        except IndexError:
            pass
        self._reader_stop = True
        os.write(self._wake_w, b"x")
        self._reader_parked.take()
        self._reader_stop = False

    # -- the reader thread

    def _read_host(self) -> None:
        """The reader thread: parked until started, then reads host frames
        until told to stop. Answers and interrupts are handled here (they
        must get through while a cell runs); the rest goes to the main
        thread. The host's end of file ends the agent."""
        try:
            poller = select.poll()
            poller.register(self.host.fd, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            while True:
                self._reader_go.take()
                self._read_until_stopped(poller)
                self._reader_parked.set()
        except EOFError:
            os._exit(0)
        except FrameError as e:
            self.die("refused a frame from the host: %s" % e)
        except BaseException:
            self.die("the reader thread failed:\n" + agent_traceback())

    def _read_until_stopped(self, poller: "select.poll") -> None:
        """Routes whole frames, and waits for more or for the stop."""
        while True:
            frame = self.host.next()
            if frame is not None:
                msg = self._route(frame)
                if msg is not None:
                    self.inbox.put(msg)
                continue
            if self._reader_stop:
                return
            host_ready = False
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    os.read(self._wake_r, 64)
                else:
                    host_ready = True
            if self._reader_stop:
                return
            if host_ready:
                self.host.fill()

    def _route(self, frame: tuple[int, bytes]) -> Optional[dict[str, Any]]:
        """One host frame to where it is handled: answers and interrupts
        here, the message the main thread handles returned."""
        kind, payload = frame
        if kind != JSON:
            raise FrameError("a frame of type 0x%02x from the host" % kind)
        try:
            msg = cjson.loads(payload)
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
            return msg
        return None

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
                self.die("hello failed:\n" + agent_traceback())
            elif t == "exec" and isinstance(msg.get("cell"), int):
                write_fd(self.diag, "rlm-sandbox agent: exec failed: %s\n" % detail)
                self._send_done(msg["cell"], "error", None)
            elif isinstance(msg.get("req"), int):
                self._reply(msg["req"], False, error=detail)
            else:
                write_fd(self.diag, "rlm-sandbox agent: ignored %r: %s\n" % (t, detail))

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
        # The prelude's globals, once: a later reset gives fresh ones.
        prelude, self.prelude_globals = self.prelude_globals, None
        self.globals = prelude if prelude is not None else new_namespace()
        self.kept = {}
        self._rebuild_scaffold()
        version = "%d.%d.%d" % sys.version_info[:3]
        ready = {"t": "ready", "python": version, "names": list(self.scaffold)}
        if self.host.pending():
            # The host sent its next request behind `hello` (a claim's first
            # cell): `ready` goes out with that request's first frame, one
            # write and one wake-up of the host instead of two. The
            # watchdog sends it on its next tick if that takes longer.
            self.channel.later(ready)
        else:
            self.channel.send_json(ready)

    def on_exec(self, msg: dict[str, Any]) -> None:
        """Runs one cell; its output, then `done`."""
        cell, code = msg.get("cell"), msg.get("code")
        if not isinstance(cell, int) or not isinstance(code, str):
            raise ValueError("exec needs cell (int) and code (str)")
        namespace = msg.get("namespace", "session")
        if namespace not in ("session", "rlms", "script"):
            raise ValueError("exec's namespace must be \"session\", \"rlms\" or \"script\", got %r" % (namespace,))
        restore, keep = _names(msg, "restore"), _names(msg, "keep")
        setup = msg.get("setup")
        if setup is not None and (not isinstance(setup, str) or namespace == "script"):
            raise ValueError("exec's setup must be a str, and not with namespace \"script\", got %r"
                             % (type(setup).__name__,))
        try:
            if namespace == "script":
                status, exit_code = self.run_script(cell, code)
                self._send_done(cell, status, None, exit_code=exit_code)
                return
            status, final = self.run_cell(cell, code, rlms=namespace == "rlms", restore=restore, keep=keep,
                                          setup=setup)
            value, self.value = self.value, None
            setup_status, self.setup_status = self.setup_status, None
            self._send_done(cell, status, final, self.user_vars() if msg.get("vars") is True else None, value,
                            setup_status=setup_status)
        finally:
            # After the `done`, while the host reads it: off the step's path.
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
        self.kept = {}
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

    def _send_done(self, cell: int, status: str, final: Optional[str],
                   user_vars: Optional[list[dict[str, Any]]] = None,
                   value: Optional[dict[str, Any]] = None,
                   exit_code: Optional[int] = None, setup_status: Optional[str] = None) -> None:
        """The cell's `done` (with the user's globals when the host asked,
        its trailing expression's value, and how its setup ended when it
        had one that ran), in one write with its small output's frames. A
        value that does not fit beside the rest loses its JSON form, then
        itself."""
        before, self.unsent = self.unsent, b""
        done: dict[str, Any] = {"t": "done", "cell": cell, "status": status, "final_answer": final}
        if setup_status is not None:
            done["setup"] = setup_status
        if user_vars is not None:
            done["vars"] = user_vars
        if value is not None:
            done["value"] = value
        if exit_code is not None:
            done["exit_code"] = exit_code
        try:
            self.channel.send_json(done, before)
        except FrameTooLarge:
            if value is None:
                raise
            value["json"] = None
            try:
                self.channel.send_json(done, before)
            except FrameTooLarge:
                del done["value"]
                self.channel.send_json(done, before)


def _names(msg: dict[str, Any], field: str) -> tuple[str, ...]:
    """`exec`'s `keep` or `restore`: a list of identifiers (absent: none)."""
    names = msg.get(field)
    if names is None:
        return ()
    if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise ValueError("exec's %s must be a list of identifiers, got %r" % (field, names))
    return tuple(names)


def _positive(value: Any, default: int, zero: bool = False) -> int:
    """An int limit from `hello`, or `default` when absent or nonsense."""
    if isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (zero and value == 0)):
        return value
    return default

