"""The session's state and the main thread's handling of host messages."""

import collections
import json
import linecache
import os
import queue
import re
import signal
import sys
import threading
import time
import traceback
import types
from typing import Any, Callable, Optional

from .calls import Calls, Waiter, outcome_texts
from .contexts import ContextError, ContextFile, load_value, not_loaded_text, open_context
from .interrupts import Interrupts, AnyFunc, CELL_PREFIX, protocol
from .namespace import (
    bounded_repr,
    format_user_exception,
    is_true,
    make_tool,
    MISSING,
    new_answer,
    new_namespace,
    size_of,
)
from .output import WATCH_EVERY, CellOutput, flush, text_stream, usable, write_fd
from .wire import (
    Channel,
    CHUNK,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LOAD_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_PROMPT_BYTES,
    encode_json,
    FRAME_SLACK,
    FrameError,
    JSON,
    MAX_HOST_FRAME,
    read_frame,
    STDERR,
)


#: Cells whose source tracebacks can show.
KEPT_SOURCES = 256


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
        self.tools: dict[str, AnyFunc] = {}
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
        write_fd(self.diag, "rlm-sandbox agent: %s\n" % why)
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
        status, final = self.run_cell(cell, code)
        self._send_done(cell, status, final, self.user_vars() if msg.get("vars") is True else None)
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
        filename = "%s%d>" % (CELL_PREFIX, cell)
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

    @protocol
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
        flush(sys.stdout)
        flush(sys.stderr)
        try:
            text = format_user_exception(exc)
        except Exception as e:
            text = "%s (its traceback could not be formatted: %s)\n" % (type(exc).__name__, type(e).__name__)
        write_fd(2, text)

    def _ensure_std_streams(self) -> None:
        """Makes print work again if user code closed or removed sys.stdout/stderr."""
        if not usable(sys.stdout):
            sys.stdout = text_stream(1, "w")
        if not usable(sys.stderr):
            sys.stderr = text_stream(2, "w")

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
        flush(sys.stdout)
        flush(sys.stderr)
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

    def _send_done(self, cell: int, status: str, final: Optional[str], user_vars: Optional[list[Any]] = None) -> None:
        """The cell's `done` (with the user's globals when the host asked),
        in one write with its small output's frames."""
        before, self.unsent = self.unsent, b""
        done: dict[str, Any] = {"t": "done", "cell": cell, "status": status, "final_answer": final}
        if user_vars is not None:
            done["vars"] = user_vars
        self.channel.send_json(done, before)

    # -- answers

    def _take_answer(self) -> Optional[str]:
        """The cell's final answer, if `answer["ready"]` is set (on the
        sandbox's dict, or on a dict user code bound to `answer`); the
        answer is then reset, so an old answer never ends a later task."""
        canon, bound = self.answer, self.globals.get("answer")
        source = canon if is_true(canon.get("ready")) else None
        if source is None and isinstance(bound, dict) and bound is not canon and is_true(bound.get("ready")):
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
            write_fd(2, "rlm-sandbox: answer['content'] cannot be made a string: %s: %s\n" % (type(e).__name__, e))
            return None
        limit = self.channel.max_frame - FRAME_SLACK
        data = text.encode("utf-8", "replace")
        if len(data) <= limit:
            return text
        write_fd(2, "rlm-sandbox: the final answer (%d bytes) was cut to the frame limit (%d bytes)\n" % (len(data), limit))
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
            if self.scaffold.get(name, MISSING) is value:
                continue
            items.append((name, value))
        return items

    def user_vars(self) -> list[dict[str, Any]]:
        """`vars`: [{name, type, size}], as many as fit in one frame."""
        budget = self.channel.max_frame - FRAME_SLACK
        out = []
        for name, value in self._user_items():
            entry = {"name": name, "type": type(value).__name__, "size": size_of(value)}
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
            if g.get(name, MISSING) is not value:
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
            write_fd(self.diag, "rlm-sandbox agent: %s\n" % e)
            return None

    def _make_tools(self, specs: Any) -> dict[str, AnyFunc]:
        """One function per declared tool; invalid declarations are skipped
        (reported on the diagnostic fd)."""
        tools: dict[str, AnyFunc] = {}
        for spec in specs if isinstance(specs, list) else []:
            name = spec.get("name") if isinstance(spec, dict) else None
            params = spec.get("params") if isinstance(spec, dict) else None
            try:
                if not isinstance(name, str) or self._reserved(name) or not isinstance(params, list):
                    raise ValueError("tool %r clashes with a sandbox name or has no params list" % (name,))
                tools[name] = make_tool(name, params, self.call_tool)
            except ValueError as e:
                write_fd(self.diag, "rlm-sandbox agent: skipped a tool: %s\n" % e)
        return tools

    def _reserved(self, name: str) -> bool:
        """Whether `name` is one of the sandbox's own names (tools may not take it)."""
        return name in self.api or name in ("answer", "context", "ctx", "ctxs") \
            or re.fullmatch(r"context_[0-9]+", name) is not None

    # -- calls

    def _api(self) -> dict[str, AnyFunc]:
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
