"""A DSPy `CodeInterpreter` on rlm-sandbox: `dspy.RLM(...,
interpreter_factory=SandboxInterpreter)` runs the model's code in a
gVisor/runc session instead of Deno/Pyodide (CPython, no network, no
~128 MB variable ceiling).

How DSPy's contract (dspy 3.4: primitives/code_interpreter.py, and the
reference PythonInterpreter and LocalInterpreter) maps onto a session:

- Lazy start. RLM calls the factory, fills `interpreter.tools` and
  `output_fields`, and runs its facade shim through `execute` before
  `start()`. Nothing starts before the first `start()`/`execute()`.
- Tools are read at call time, so no tool is fixed at the start and a new
  one never needs a restart. The session declares a single host tool
  (`HOST_TOOL`); before each step the sandbox gets, for every entry of
  `tools`, a function with that tool's own signature (checked there:
  a wrong call is the code's TypeError) that calls `tools[name](*args,
  **kwargs)` here with the arguments as the code gave them, through
  `invoke_tool(name, args, kwargs)` as LocalInterpreter (its callbacks
  see the same inputs); a default is the host's. A host exception is a
  RuntimeError in the code, as in DSPy's interpreters; names starting
  with `_` (the facade's `__dspy_call__`) work like any other.
- `llm_query`/`llm_query_batched` are the sandbox's own functions: each
  prompt comes here and is answered by `tools["llm_query"]` (by keyword,
  with its parameter's name), concurrently within a batch. DSPy's budget
  and sub-LM apply; a failure is an "Error: ..." string in the code (the
  sandbox's convention) where DSPy's own interpreters raise. The
  sandbox's `rlm_query*` are plain `llm_query*` here.
- Host calls run in the caller's `contextvars` context (copied when
  `execute` starts), so `dspy.context(lm=...)` reaches them.
- `SUBMIT(...)` takes the output fields (`output_fields`, which RLM sets;
  `SUBMIT(output)` when they are None, `SUBMIT()` when they are []), by
  position or by name, all required.
  It stores them as the cell's final answer and raises a BaseException
  (not an Exception: `except Exception` cannot swallow it), so it ends
  the code; `execute` returns `FinalOutput(fields)`. Code that catches
  it anyway (a bare `except:`) goes on and submits nothing, as in
  LocalInterpreter. The sandbox resets
  its answer after every cell: an old SUBMIT never ends a later step.
- Inputs are sent once: a value already sent (same name, same JSON) is
  not sent again, but every step binds each input name to the value DSPy
  gave (as DSPy's interpreters do: a step that rebinds an input sees it
  restored at the next). Values are made JSON like the reference
  (pydantic models, dataclasses, tuples, sets...); a small one travels as
  JSON text in code, one above `INLINE_BYTES` as a context file (mounted,
  never source code). A context file is also what the sandbox calls
  `context` (its first one), so when files are used an input named
  `context` is sent first, as a file; an input named `ctx` then clashes.
  Contexts are checked by the session's egress filter: output
  reproducing much of a file-borne input is redacted.
- Results, as LocalInterpreter returns them: the value of the code's
  trailing expression when it is not None (its JSON form, or its repr
  when it has none: the session's `Cell.value`), else the printed output
  (stdout, then stderr) without its trailing newlines, None when nothing
  was printed. So `dspy.Flex`'s driver, whose last line is
  `json.dumps(prediction fields)`, gets its result. An exception in the
  code is CodeExecutionError with its traceback, a SyntaxError (or
  subclass) is SyntaxError, a cell past its timeout or output limit is
  CodeExecutionError (the sandbox lives on, where LocalInterpreter ends
  its worker). A sandbox that ended (out of memory, killed) is
  CodeInterpreterError, as is every later call: never a silent restart.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import keyword
import re
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, TypeVar, cast

from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspy.utils.callback import with_callbacks

from ._dspy_boundary import POSITIONAL_KEY, Input, awaited, check_constructor_args, param_names, tool_result
from ._dspy_holdings import INLINE_BYTES, QUERY_TOOLS, Holdings, Step
from .errors import SandboxError
from .options import SESSION
from .pool import Pool
from .results import Cell
from .server import resolve as resolve_server
from .session import Session

# The one tool the session declares; the sandbox's tool functions call it.
HOST_TOOL = "rlm_sandbox_dspy_tool"
# DSPy's tools the sandbox already has (answered through tools["llm_query"]).
_SUPPORT_MODULE = "_rlm_sandbox_dspy"
_SUPPORT_FILE = "<rlm_sandbox.dspy>"
_SUBMIT_MARK = "\x00rlm_sandbox.dspy SUBMIT\x00"
# Prelude cells stay well under the session's 8 MiB frame.
_PRELUDE_CELL_BYTES = 1 << 20
# The sandbox defines these once it has a context file (PROTOCOL.md).
# Session settings that would answer llm_query without DSPy's tools.
_REFUSED_SETTINGS = frozenset({"llm_command", "llm_endpoint", "llm_model", "llm_api_key_env"})
_SETTINGS = (SESSION | {"binary", "env", "server", "wait"}) - _REFUSED_SETTINGS
# SandboxInterpreter's own arguments (LocalInterpreter's, `timeout` aside).
_CONSTRUCTOR_ARGS = frozenset({"tools", "output_fields", "callbacks", "execution_timeout"})

# The sandbox's side (python/rlm_sandbox/_dspy_sandbox.py), sent as source.
_SUPPORT_SOURCE = (Path(__file__).with_name("_dspy_sandbox.py")).read_text(encoding="utf-8")

F = TypeVar("F", bound=Callable[..., Any])


def _callbacks(fn: F) -> F:
    """DSPy's callback hooks (on_interpreter_*), as its interpreters have."""
    return cast(F, with_callbacks(fn))


def _define_support() -> List[str]:
    """Lines that define the support module (its source kept for
    tracebacks) in the sandbox's sys.modules, leaving no global behind."""
    return [
        "import sys as _rlm_sys, types as _rlm_types, _rlm_agent.sources as _rlm_lines",
        f"_rlm_src = {_SUPPORT_SOURCE!r}",
        f"_rlm_mod = _rlm_types.ModuleType({_SUPPORT_MODULE!r})",
        # Its source for tracebacks, through the agent (linecache's import
        # costs ~4 ms: the agent hands the source over when it is imported).
        f"_rlm_lines.shared().put({_SUPPORT_FILE!r}, _rlm_src)",
        f"exec(compile(_rlm_src, {_SUPPORT_FILE!r}, 'exec'), _rlm_mod.__dict__)",
        f"_rlm_sys.modules[{_SUPPORT_MODULE!r}] = _rlm_mod",
        "del _rlm_sys, _rlm_types, _rlm_lines, _rlm_src, _rlm_mod",
    ]


# What `SandboxInterpreter.pool()`'s sandboxes run before their claim: the
# support module's definition (its compile is most of the setup's time).
PRELUDE = "\n".join(_define_support()) + "\n"


def _setup_code(first_apply: Optional[Dict[str, Any]] = None, defined: bool = False) -> str:
    """The first cell's setup: the support module (unless a prelude
    `defined` it), started on the user's globals; with `first_apply`, the
    first step's bookkeeping too (SUBMIT's fields). It goes as the `setup`
    of the first cell, whatever that is (exec's `setup`: one cell, not a
    cell of setup before the step's)."""
    start = f"__import__({_SUPPORT_MODULE!r}).start(globals(), {_SUBMIT_MARK!r}, {HOST_TOOL!r})"
    return "\n".join(
        ([] if defined else _define_support())
        + [start]
        + ([_support_call("apply", json.dumps(first_apply))] if first_apply else [])
    )


def _support_call(function: str, *args: str) -> str:
    """A line of code calling the support module (apply also gets the
    user's globals); arguments are str literals."""
    arguments = (["globals()"] if function == "apply" else []) + [repr(a) for a in args]
    return f"__import__({_SUPPORT_MODULE!r}).{function}({', '.join(arguments)})"


# -- cells -------------------------------------------------------------------

_SYNTAX_LINE = re.compile(r"(SyntaxError|IndentationError|TabError)(:|$)")


def _printed(cell: Cell) -> str:
    """What the cell printed: stdout, then stderr (LocalInterpreter sends
    both to one file)."""
    if cell.stdout and cell.stderr and not cell.stdout.endswith("\n"):
        return cell.stdout + "\n" + cell.stderr
    return cell.stdout + cell.stderr


def _ends_in_syntax_error(stderr: str) -> bool:
    """The code's exception was a SyntaxError (or subclass): the last
    line of its traceback names it."""
    lines = stderr.rstrip().splitlines()
    return bool(lines) and _SYNTAX_LINE.match(lines[-1]) is not None


# The last line of the traceback of a SUBMIT that ended the code.
_SUBMITTED_LINE = f"{_SUPPORT_MODULE}.Submitted: SUBMIT ends the step"
# How the last line of a step's setup refused by the sandbox starts.
_REFUSED_PREFIX = f"{_SUPPORT_MODULE}.Refused: "


def _refusal(cell: Cell) -> Optional[str]:
    """The sandbox's refusal of a step's name (its support's `Refused`),
    when that is how the cell's setup failed."""
    if cell.setup != "error":
        return None
    last = cell.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    return last[len(_REFUSED_PREFIX):] if last.startswith(_REFUSED_PREFIX) else None


def _submission(cell: Cell) -> Optional[Dict[str, Any]]:
    """SUBMIT's fields, when the cell called it and SUBMIT ended it (as in
    LocalInterpreter, code that catches SUBMIT's exception goes on and
    submits nothing)."""
    final_answer = cell.final_answer
    if final_answer is None or not final_answer.startswith(_SUBMIT_MARK):
        return None
    lines = cell.stderr.rstrip("\n").rsplit("\n", 1)
    if cell.status != "error" or lines[-1] != _SUBMITTED_LINE:
        return None
    try:
        fields = json.loads(final_answer[len(_SUBMIT_MARK):])
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        filtered = sorted({str(f.get("kind")) for f in cell.findings if f.get("stream") == "final_answer"})
        if filtered:
            raise CodeExecutionError(
                f"SUBMIT's values could not be read back: the sandbox's egress filter redacted part of them "
                f"({', '.join(filtered)}); submit values that do not reproduce the input data or hold secrets"
            )
        raise CodeExecutionError(
            f"SUBMIT's values ({len(final_answer)} characters) could not be read back: the sandbox cuts a final "
            "answer at its frame limit; submit smaller values"
        )
    return fields


def _weak_host(interpreter: "SandboxInterpreter") -> Dict[str, Callable[..., Any]]:
    """The Session's llm and tool callables, holding the interpreter
    weakly: the session's finalizer keeps them, and must not keep the
    interpreter (a dropped one is then collected, its sandbox removed)."""
    ref = weakref.ref(interpreter)

    def alive() -> "SandboxInterpreter":
        found = ref()
        if found is None:
            raise CodeInterpreterError("the SandboxInterpreter is gone")
        return found

    def llm(prompt: str, model: Optional[str]) -> str:
        return alive()._answer_query(prompt, model)

    def host_tool(name: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        return alive()._answer_tool(name, kwargs)

    return {"llm": llm, "tool": host_tool}


class SandboxInterpreter:
    """DSPy's CodeInterpreter protocol over an rlm-sandbox Session (see
    the module's docstring for how each part maps).

    `tools` is copied, as DSPy's interpreters do (a factory handing the
    same dict to concurrent RLM calls must not share their budgets);
    update `interpreter.tools` in place, as RLM does: it is read at every
    call. Other keyword arguments are Session settings (`runtime`,
    `memory`, `timeout` (per step), `binary`, ...), checked here though
    the sandbox starts later.
    """

    execution_instructions = (
        "Python (CPython 3) runs in an isolated rlm-sandbox container: no network, no host files, a memory and time "
        "limit per execution. State persists across executions. Input variables, host tools and SUBMIT are globals. "
        "llm_query and llm_query_batched return a string starting with 'Error:' when a call fails; a host tool's "
        "failure raises RuntimeError. Output that reproduces much of a large input is redacted."
    )

    def __init__(
        self,
        tools: Optional[Dict[str, Callable[..., Any]]] = None,
        output_fields: Optional[List[Dict[str, Any]]] = None,
        *,
        callbacks: Optional[List[Any]] = None,
        execution_timeout: Optional[float] = None,
        pool: Optional[Pool] = None,
        **settings: Any,
    ) -> None:
        _check_settings(settings)
        if pool is not None:
            if not isinstance(pool, Pool):
                raise TypeError(f"pool must be an rlm_sandbox.Pool, not {type(pool).__name__}")
            given = sorted(set(settings) & {"binary", "env"})
            if given:
                raise TypeError(f"SandboxInterpreter(pool=...) takes no {', '.join(given)}: the pool's apply")
        check_constructor_args(tools or {}, output_fields)
        if execution_timeout is not None:
            # LocalInterpreter's name for the per-step limit (`timeout`).
            if execution_timeout <= 0:
                raise ValueError("execution_timeout must be positive or None")
            if settings.get("timeout") is not None:
                raise TypeError("SandboxInterpreter takes timeout or execution_timeout, not both")
            settings["timeout"] = execution_timeout
        self.tools: Dict[str, Callable[..., Any]] = dict(tools) if tools else {}
        # Copied, as LocalInterpreter does: a factory's list is not shared.
        self.output_fields = None if output_fields is None else [dict(f) for f in output_fields]
        self.callbacks = list(callbacks or [])
        self._settings = settings
        self._pool = pool
        self._session: Optional[Session] = None
        # The interpreter's setup, not yet sent: the setup of the first cell
        # (see _start_session).
        self._setup: Optional[str] = None
        self._pid: Optional[int] = None
        self._ended: Optional[str] = None
        self._busy = threading.Lock()
        self._starting = threading.Lock()
        self._call_context = contextvars.copy_context()
        # What the sandbox holds: SUBMIT's fields, the tool signatures, the
        # inputs, the kept inputs and how many context files it has.
        self._holdings = Holdings()

    @classmethod
    def factory(cls, **settings: Any) -> Callable[[], "SandboxInterpreter"]:
        """A zero-argument factory for `interpreter_factory=` that keeps
        `execution_instructions` (a lambda would lose them). Takes the
        constructor's arguments too (tools, output_fields, callbacks,
        execution_timeout); each interpreter copies them."""
        _check_settings({k: v for k, v in settings.items() if k not in _CONSTRUCTOR_ARGS and k != "pool"})
        made = functools.partial(cls, **settings)
        setattr(made, "execution_instructions", cls.execution_instructions)
        return made

    @classmethod
    def pool(cls, size: Optional[int] = None, **settings: Any) -> Pool:
        """A Pool whose sandboxes ran the interpreter's setup (its support
        module, compiled and run in the sandbox) before their claim, so a
        `SandboxInterpreter(pool=...)` drawn from it is interactive sooner;
        what depends on the claim (SUBMIT's fields, tools) still comes
        with the first cell. `settings` are Pool's (`idle_timeout`,
        `runtime`, `memory`, ...). A plain Pool works too, with the setup
        after the claim."""
        _check_settings({k: v for k, v in settings.items() if k not in ("idle_timeout",)})
        if "prelude" in settings:
            raise TypeError("SandboxInterpreter.pool() sets the prelude itself (the interpreter's setup)")
        # A server starts its sandboxes without our prelude: the setup then
        # comes with the first cell (the pool's `prelude` is None).
        through_server = resolve_server(settings.get("server"), "SandboxInterpreter.pool()") is not None
        return Pool(size, prelude=None if through_server else PRELUDE, **settings)

    @property
    def session(self) -> Optional[Session]:
        """The running Session (None before the start and after the end)."""
        return self._session

    @property
    def pid(self) -> Optional[int]:
        """The last session's `rlm-sandbox session` pid (kept after its end)."""
        return self._pid

    # -- lifecycle ---------------------------------------------------------

    @_callbacks
    def start(self) -> None:
        """Starts the sandbox; idempotent. A sandbox that ended is not
        restarted (its state is gone): CodeInterpreterError."""
        with self._starting:  # a pool may pre-warm from several threads
            self._check_usable()
            if self._session is None:
                self._start_session()

    def _start_session(self) -> None:
        """Starts (or, with a pool, claims) the session; the claim goes out
        now (the agent is ready while the caller goes on), the
        interpreter's setup with the first cell, as its `setup`: a pooled
        start and its first step are one cell after the claim. A setup
        that fails ends the interpreter at that point."""
        host = _weak_host(self)
        tools = {HOST_TOOL: host["tool"]}
        try:
            if self._pool is not None:
                session = self._pool._session((), host["llm"], None, tools, None, dict(self._settings))
            else:
                session = Session(llm=host["llm"], tools=tools, **self._settings)
        except SandboxError as e:  # nothing was lost: a later start() may work
            raise CodeInterpreterError(f"the sandbox could not start: {e}") from e
        self._session = session
        self._pid = session.pid
        # SUBMIT's fields (and no tools, when none is set) are known now;
        # tools come with the first step (_prepare).
        first: Dict[str, Any] = {"submit": _output_names(self.output_fields)}
        if not self._current_tool_names():
            first["tools"] = {}
        # A sandbox of SandboxInterpreter.pool() (a claimed standby or its
        # cold fallback) ran PRELUDE before it was ready.
        defined = self._pool is not None and self._pool.prelude == PRELUDE
        self._setup = _setup_code(first, defined)
        self._holdings.submit_names, self._holdings.tool_specs = first["submit"], first.get("tools")

    def _current_tool_names(self) -> List[str]:
        return [name for name in self.tools if name not in QUERY_TOOLS]

    @_callbacks
    def shutdown(self) -> None:
        """Removes the sandbox and everything it created; idempotent. A
        pooled interpreter's sandbox is removed off this path (the pool's
        `close` waits for it)."""
        if self._ended is None:
            self._ended = "it was shut down"
        self._setup = None
        session, self._session = self._session, None
        if session is None:
            return
        if self._pool is not None:
            # Removed off this path; the pool's close waits for it.
            self._pool.retire(session)
        else:
            session.close()

    def __enter__(self) -> "SandboxInterpreter":
        """Starts the sandbox, as LocalInterpreter's `with` does."""
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __call__(self, code: str, variables: Optional[Dict[str, Any]] = None) -> Any:
        return self.execute(code, variables)

    def _check_usable(self) -> None:
        if self._ended is not None:
            raise CodeInterpreterError(
                f"this SandboxInterpreter has ended ({self._ended}); create a new one for a fresh session"
            )

    def _terminal(self, why: str, cause: Optional[BaseException] = None) -> NoReturn:
        """Ends the interpreter: its sandbox is gone or unusable."""
        self._ended = why
        self._setup = None
        session, self._session = self._session, None
        if session is not None:
            session.close()
        raise CodeInterpreterError(f"{why}; the sandbox's state is lost, create a new SandboxInterpreter") from cause

    # -- code --------------------------------------------------------------

    @_callbacks
    def execute(self, code: str, variables: Optional[Dict[str, Any]] = None) -> Any:
        """Runs `code` with `variables` bound: FinalOutput when it called
        SUBMIT, else its trailing expression's value when not None, else
        what it printed (None when nothing). One cell: what the step needs
        bound first goes as the cell's setup (`_prepare`)."""
        if not isinstance(code, str):
            raise CodeInterpreterError(f"code must be a str, not {type(code).__name__}")
        if variables is not None and not isinstance(variables, dict):
            raise CodeInterpreterError(f"variables must be a dict, not {type(variables).__name__}")
        if not self._busy.acquire(blocking=False):
            raise CodeInterpreterError("this SandboxInterpreter is already running code (from a tool, or another thread)")
        try:
            self._call_context = contextvars.copy_context()
            if self._session is None:
                self.start()
            step = self._prepare(variables or {})
            cell = self._run(code, keep=step.keep, restore=step.restore, setup=step.setup)
            if step.setup is not None:
                self._prepared(step, cell)
            return self._outcome(cell)
        finally:
            self._busy.release()

    def _run(
        self, code: str, keep: Sequence[str] = (), restore: Sequence[str] = (), setup: Optional[str] = None
    ) -> Cell:
        """One cell (keeping or restoring input names, exec's `keep` and
        `restore`; `setup` run before the code, exec's `setup`); the first
        cell's setup starts with the interpreter's, and ends the
        interpreter when it fails, as does an ended sandbox."""
        session = self._session
        if session is None:
            self._check_usable()
            raise CodeInterpreterError("the sandbox has not started")
        first, self._setup = self._setup, None
        if first is not None:
            setup = first if setup is None else first + "\n" + setup
        try:
            cell = session.exec(code, keep=keep, restore=restore, setup=setup)
        except SandboxError as e:
            self._terminal(f"the sandbox has ended: {str(e).splitlines()[0]}", e)
        except ValueError as e:
            self._terminal(f"the session refused the code: {e}", e)
        if cell.session_dead:
            self._terminal(f"the sandbox ended in this code (status {cell.status}: {cell.error})")
        if first is not None and cell.setup != "ok" and _refusal(cell) is None:
            self._terminal(f"the interpreter's setup failed in the sandbox: {_printed(cell).rstrip()}")
        return cell

    def _outcome(self, cell: Cell) -> Any:
        """A cell as DSPy's interpreters report it."""
        fields = _submission(cell)
        if fields is not None:
            return FinalOutput(fields)
        printed = _printed(cell)
        if cell.status == "ok":
            if cell.value is not None:
                return cell.value.json if cell.value.has_json else cell.value.repr
            return printed.rstrip("\n") or None
        if cell.status == "error" and _ends_in_syntax_error(cell.stderr):
            raise SyntaxError(f"Invalid Python syntax:\n{printed.rstrip()}")
        if cell.status == "error":
            raise CodeExecutionError(printed.rstrip() or "the code failed without a traceback")
        limits = self._session.ready.get("limits", {}) if self._session is not None else {}
        if cell.status == "timeout":
            why = f"the code ran past the time limit ({limits.get('cell_timeout_s')} s) and was interrupted"
        elif cell.status == "output_limit":
            why = "the code printed more than the output limit and was interrupted"
        else:
            why = f"the code ended with status {cell.status}"
        raise CodeExecutionError(why + (":\n" + printed.rstrip() if printed.rstrip() else ""))

    # -- what each step needs in the sandbox ---------------------------------

    def _prepare(self, variables: Dict[str, Any]) -> Step:
        """Brings SUBMIT, the tool functions and the inputs up to date:
        only what changed travels (the record: _dspy_holdings.py), then
        every input name is bound, as the setup of the step's own cell
        (exec's `setup`, which `keep` follows: the inputs are kept as
        bound, whatever the code rebinds). The record changes only once
        the sandbox has done it (`_prepared`). A step whose inputs, tools
        and SUBMIT did not change (DSPy passes the same variables every
        step) needs no setup: the sandbox kept the bound inputs and the
        step's cell restores them (exec's `restore`)."""
        held = self._holdings
        ops: Dict[str, Any] = {}
        names = _output_names(self.output_fields)
        if names != held.submit_names:
            ops["submit"] = names
        specs = held.tool_specs_for(self.tools, variables)
        if specs != held.tool_specs:
            ops["tools"] = specs
        inline, pending, changed = held.changed_inputs(variables, ops, self._add_file)
        lines = [_support_call("put_json", name, text) for name, text in inline]
        if not ops and not lines:
            return Step()
        if not changed and not lines and ops.keys() <= {"bind", "files"} and held.kept >= set(variables):
            return Step(restore=list(variables))
        lines.append(_support_call("apply", json.dumps(ops)))
        *before, setup = _pack(lines)
        for code in before:  # many small inputs: cells of their own first
            self._check_prepared(self._run(code))
        return Step(setup=setup, keep=list(variables), names=names, specs=specs, pending=pending)

    def _prepared(self, step: Step, cell: Cell) -> None:
        """Records what the step's setup did, once it ended ok (a cell
        that says nothing of its setup did not run it)."""
        self._check_prepared(cell, cell.setup or "not run")
        self._holdings.record(step)

    def _check_prepared(self, cell: Cell, status: Optional[str] = None) -> None:
        """A preparation that did not end ok: nothing small is known to be
        in the sandbox any more; CodeInterpreterError (the sandbox's
        refusal of a name, or what failed)."""
        if (status or cell.status) != "ok":
            self._holdings.forget_inline()
            refused = _refusal(cell)
            if refused is not None:
                raise CodeInterpreterError(refused)
            raise CodeInterpreterError(f"preparing the step in the sandbox failed:\n{_printed(cell).strip()}")

    def _add_file(self, name: str, prepared: Input) -> int:
        """Sends one input as a context file; its index."""
        assert self._session is not None
        limit = int(self._session.ready.get("limits", {}).get("max_load_bytes") or 0)
        if limit and prepared.size > limit:
            raise CodeInterpreterError(
                f"input {name!r} is {prepared.size} bytes, above the sandbox's context load limit ({limit} bytes); "
                "raise it with SandboxInterpreter(context_load_bytes=...)"
            )
        try:
            added = self._session.add_context(prepared.jsonable)
        except SandboxError as e:
            self._terminal(f"the sandbox has ended: {str(e).splitlines()[0]}", e)
        except (TypeError, ValueError) as e:
            raise CodeInterpreterError(f"input {name!r} could not be sent as a context file: {e}") from e
        return int(added["index"])

    # -- the host side of the sandbox's calls ----------------------------------

    @_callbacks
    def invoke_tool(self, tool_name: str, args: List[Any], kwargs: Dict[str, Any]) -> Any:
        """One host tool, called as the code called it, as LocalInterpreter
        calls it (the same signature, which its callbacks see)."""
        fn = self.tools.get(tool_name)
        if fn is None:
            raise CodeInterpreterError(f"Unknown tool: {tool_name}")
        result = fn(*args, **kwargs)
        # An async tool: a call thread has no running loop of its own.
        return asyncio.run(awaited(result)) if inspect.isawaitable(result) else result

    def _in_caller_context(self, name: str, kwargs: Dict[str, Any]) -> Any:
        """A tool in the context `execute` was called in (a copy per call:
        calls of a batch run at once)."""
        args = kwargs.pop(POSITIONAL_KEY, [])
        if not isinstance(args, list):
            raise CodeInterpreterError(f"{name}(): the sandbox sent positional arguments that are not a list")
        return self._call_context.copy().run(self.invoke_tool, name, args, kwargs)

    def _answer_query(self, prompt: str, model: Optional[str]) -> str:
        """One prompt of the sandbox's llm_query*: DSPy's llm_query (its
        budget, its sub-LM). `model` goes only to a tool that takes it."""
        fn = self.tools.get("llm_query")
        if fn is None:
            raise CodeInterpreterError("no llm_query tool is registered (dspy.RLM registers one)")
        params = param_names(fn)
        kwargs: Dict[str, Any] = {params[0] if params else "prompt": prompt}
        if model is not None and "model" in params[1:]:
            kwargs["model"] = model
        answer = self._in_caller_context("llm_query", kwargs)
        return answer if isinstance(answer, str) else str(answer)

    def _answer_tool(self, name: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """One call of a sandbox tool function: {"value"} or {"error"}."""
        try:
            return {"value": tool_result(self._in_caller_context(name, kwargs))}
        except BaseException as e:  # the code sees it as RuntimeError; the session goes on
            return {"error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__}


def _output_names(fields: Optional[List[Dict[str, Any]]]) -> List[str]:
    """SUBMIT's parameters: the output fields' names (RLM sets them);
    None means the reference's single `output`, [] none at all."""
    if fields is None:
        return ["output"]
    names = [f.get("name") for f in fields if isinstance(f, dict)]
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise CodeInterpreterError(f"output field name {name!r} is not a Python identifier")
    return cast(List[str], names)


def _pack(lines: List[str]) -> List[str]:
    """Lines grouped into cells of at most _PRELUDE_CELL_BYTES (a line
    is at most a small input's JSON, escaped)."""
    cells: List[str] = []
    current: List[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) > _PRELUDE_CELL_BYTES:
            cells.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        cells.append("\n".join(current))
    return cells


def _check_settings(settings: Dict[str, Any]) -> None:
    """Refuses unknown settings now, though the sandbox starts later."""
    refused = sorted(set(settings) & _REFUSED_SETTINGS)
    if refused:
        raise TypeError(
            f"SandboxInterpreter does not take {', '.join(refused)}: DSPy's llm_query answers the sandbox's calls"
        )
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise TypeError(
            f"SandboxInterpreter got unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(_SETTINGS))}"
        )
