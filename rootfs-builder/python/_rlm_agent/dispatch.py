"""The agent's message handling: the reader thread that takes host
frames, and the main thread's dispatch of requests (`hello`, `exec`,
`vars`, `get`, `add_context`, `reset`) to their handlers and replies.

The top layer of the agent (built on script.Scripts, on cell.Cells, on
scaffold.Scaffold): kept apart from cell running so that what the host
may ask, and how each request is answered or refused, reads in one place.
"""

import json
import os
import queue
import sys
import threading
import traceback
from typing import Any, Callable, Optional

from .script import Scripts
from .contexts import ContextError
from .namespace import bounded_repr, compile_cell, make_tool, new_answer, new_namespace
from .output import write_fd
from .wire import (
    Channel,
    CHUNK,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LOAD_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_PROMPT_BYTES,
    FRAME_SLACK,
    FrameError,
    FrameTooLarge,
    JSON,
    MAX_HOST_FRAME,
    read_frame,
)


class Agent(Scripts):
    """The session's state and the main thread's handling of host messages."""

    def __init__(self, host_in: int, host_out: int, diag: int, devnull: int) -> None:
        self.diag = diag
        super().__init__(Channel(host_out, self.die), diag, devnull)
        self.inbox: "queue.SimpleQueue[dict[str, Any]]" = queue.SimpleQueue()
        self.host_in = host_in

    # -- lifecycle

    def die(self, why: str, code: int = 1) -> None:
        """Ends the agent with `why` on its diagnostic descriptor."""
        write_fd(self.diag, "rlm-sandbox agent: %s\n" % why)
        os._exit(code)

    def start(self) -> None:
        """Starts the reader thread and the output watchdog."""
        threading.Thread(target=self._read_host, name="rlm-reader", daemon=True).start()
        threading.Thread(target=self._watch_output, name="rlm-watch", daemon=True).start()

    def standby(self) -> None:
        """Tells the host the agent is up and waits for `hello`: every
        import, descriptor, thread and handler is in place, so a sandbox
        started before its work is known (a pool's) lacks only the work.
        Sent once, before anything else."""
        self._warm()
        self.channel.send_json({"t": "standby"})

    def _warm(self) -> None:
        """Runs once, on throwaway input, what a claim's `hello` and its
        first cell run first: the compiler (a cell, a tool's function),
        the tool name check's pattern. Their first use costs most (code
        paged in, a pattern compiled; under gVisor a millisecond and
        more), and before `standby` nobody waits for it."""
        compile_cell("_w = 1\n_w", "<warm>")
        make_tool("_w", ["a"], lambda name, args: None)
        self._reserved("_w")

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
        self.globals = new_namespace()
        self._rebuild_scaffold()
        version = "%d.%d.%d" % sys.version_info[:3]
        self.channel.send_json({"t": "ready", "python": version, "names": list(self.scaffold)})

    def on_exec(self, msg: dict[str, Any]) -> None:
        """Runs one cell; its output, then `done`."""
        cell, code = msg.get("cell"), msg.get("code")
        if not isinstance(cell, int) or not isinstance(code, str):
            raise ValueError("exec needs cell (int) and code (str)")
        namespace = msg.get("namespace", "session")
        if namespace not in ("session", "rlms", "script"):
            raise ValueError("exec's namespace must be \"session\", \"rlms\" or \"script\", got %r" % (namespace,))
        if namespace == "script":
            status, exit_code = self.run_script(cell, code)
            self._send_done(cell, status, None, exit_code=exit_code)
            self._prepare_output()
            return
        status, final = self.run_cell(cell, code, rlms=namespace == "rlms")
        value, self.value = self.value, None
        self._send_done(cell, status, final, self.user_vars() if msg.get("vars") is True else None, value)
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

    def _send_done(self, cell: int, status: str, final: Optional[str],
                   user_vars: Optional[list[dict[str, Any]]] = None,
                   value: Optional[dict[str, Any]] = None,
                   exit_code: Optional[int] = None) -> None:
        """The cell's `done` (with the user's globals when the host asked,
        and its trailing expression's value), in one write with its small
        output's frames. A value that does not fit beside the rest loses
        its JSON form, then itself."""
        before, self.unsent = self.unsent, b""
        done: dict[str, Any] = {"t": "done", "cell": cell, "status": status, "final_answer": final}
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


def _positive(value: Any, default: int, zero: bool = False) -> int:
    """An int limit from `hello`, or `default` when absent or nonsense."""
    if isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (zero and value == 0)):
        return value
    return default

