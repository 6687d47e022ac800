"""A drop-in environment for the reference RLM library (`rlms`, imported
as `rlm`): `RLM(..., environment="rlm-sandbox")` after `install()`.

Cells run in an rlm-sandbox session (gVisor or runc, no network, the
context mounted read-only) instead of the host process. `llm_query*`
calls travel over the session's pipes to this process, which forwards
them to the RLM's LM handler with the library's own socket client
(`send_lm_request`, carrying the environment's `depth`, so sub-calls are
billed to `other_backends` as with the local environment), and
`rlm_query*` to the RLM's `subcall_fn` (a child RLM).

Why `install()` patches three places (rlms 0.1.3): `rlm.core.rlm`
imports `get_environment` into its own namespace; `persistent=True` is
refused for any environment name but local/ipython/docker; and
`subcall_fn`/`compaction` are passed only to those names, while child
RLMs are built as plain `RLM(environment=...)` (an RLM subclass would
not reach them).

Observables, against LocalREPL (the reference) and DockerREPL (rlms's
isolated environment): `stdout` and `stderr` are the cell's (an error's
traceback, as DockerREPL prints it, without the sandbox's frames; a
trailing expression prints nothing); `locals` has LocalREPL's names in
its order (`answer`, the contexts, `history*`, the user's globals; the
tools are not in it) and, since values stay in the sandbox, `"<type>"`
for the types rlms lists among "REPL variables" and a `SandboxObject`
for the others, so the model is shown the same list; `rlm_calls` holds
each completion in the order the code made its calls, a batch in prompt
order, whatever order the answers came in; a malformed sub-call result
(no str `response`) is an "Error: ..." answer and is not recorded.
`rlm_query_batched` runs at most `max_concurrent_subcalls` sub-RLMs at
once; an `llm_query_batched` is bounded by the session's in-flight limit
(the `llm_max_in_flight` setting, 8 by default). After each cell `history` is the
compaction list (or `history_0`) again and custom tools are rebound, as
LocalREPL's `_restore_scaffold` does; custom tools whose value is Python
source run in the sandbox (DockerREPL's rule). A cell's bindings outlive
it as in LocalREPL: none of a cell that raised (or timed out), none of
names starting with `_`, which the agent undoes itself when asked
(`exec`'s `namespace="rlms"`: no second cell per cell); `SHOW_VARS()`
lists the contexts before the user's names, as LocalREPL's does.
Differences left, all from the sandbox's own namespace: a name a cell
deletes is gone (LocalREPL keeps it, and lists the `f` and `json` its
own context loading leaves); `context_N` are restored like `context`,
and one loaded cannot be replaced (`add_context` refuses its index);
`FINAL`/`FINAL_VAR` exist (rlms 0.1.3 defines neither: calling them
there is a NameError); `answer` is reset after the cell that set it
(see `update_handler_address`); the builtins are all there (as in
DockerREPL; LocalREPL blocks `eval`, `exec`, `input`...)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from rlm.core import rlm as _rlm_core
from rlm.core.comms_utils import LMRequest, send_lm_request
from rlm.core.types import REPLResult, RLMChatCompletion
from rlm.environments.base_env import NonIsolatedEnv, extract_tool_value, validate_custom_tools

from . import _rlms_scaffold as scaffold
from .calls import current_call
from .errors import SandboxError
from .pool import Pool
from .session import Session

ENVIRONMENT = "rlm-sandbox"
# The RLM whose completion is creating an environment right now (set
# around `_spawn_completion_context`, read by the patched get_environment).
_creating: "contextvars.ContextVar[Optional[Any]]" = contextvars.ContextVar("rlm_sandbox_creating", default=None)


def _code_binding(name: str, value: Any) -> str:
    """Source that binds `name` to a JSON value (no pickles, no eval of
    host reprs: the sandbox parses the JSON itself)."""
    text = json.dumps(value, ensure_ascii=False)
    return f"{name} = __import__('json').loads({text!r})"


class MalformedResult(ValueError):
    """A sub-call's result without a str `response`."""


def _response_text(completion: Any) -> str:
    """The answer of a completion, checked before it is recorded (as
    DockerREPL reads `.response` first): a str, valid Unicode."""
    response = getattr(completion, "response", None)
    if not isinstance(response, str):
        raise MalformedResult(f"the result is a {type(completion).__name__} without a str response")
    try:
        response.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MalformedResult(f"the response is not valid Unicode text ({e.reason})") from None
    return response


class RlmSandboxREPL(NonIsolatedEnv):  # type: ignore[misc]  # rlms ships no types
    """The rlms environment protocol (setup, load_context, execute_code,
    cleanup, and the persistence methods) over an rlm-sandbox Session.
    Keyword arguments besides those RLM passes are Session settings
    (`runtime`, `memory`, `timeout`, ...). With `pool` (an
    rlm_sandbox.Pool, e.g. `environment_kwargs={"pool": pool}`) the
    sandbox is a pooled one, claimed for this environment alone; the
    settings then are the claim's (one that shapes the sandbox and
    differs from the pool's starts it cold)."""

    def __init__(
        self,
        lm_handler_address: Optional[Tuple[str, int]] = None,
        context_payload: Optional[Any] = None,
        setup_code: Optional[str] = None,
        persistent: bool = False,
        depth: int = 1,
        subcall_fn: Optional[Callable[[str, Optional[str]], RLMChatCompletion]] = None,
        custom_tools: Optional[Dict[str, Any]] = None,
        custom_sub_tools: Optional[Dict[str, Any]] = None,
        compaction: bool = False,
        max_concurrent_subcalls: int = 4,
        pool: Optional[Pool] = None,
        **settings: Any,
    ) -> None:
        if pool is not None and not isinstance(pool, Pool):
            raise TypeError(f"pool must be an rlm_sandbox.Pool, not {type(pool).__name__}")
        self._pool = pool
        super().__init__(persistent=persistent, depth=depth, max_concurrent_subcalls=max_concurrent_subcalls)
        self.lm_handler_address = lm_handler_address
        self.subcall_fn = subcall_fn
        self.compaction = compaction
        self.custom_tools = custom_tools or {}
        self.custom_sub_tools = custom_sub_tools if custom_sub_tools is not None else self.custom_tools
        validate_custom_tools(self.custom_tools)
        self._settings = settings
        # (call number, item, arrival) → completion: sorted when the cell ends.
        self._calls: List[Tuple[Tuple[int, int, int], RLMChatCompletion]] = []
        self._calls_lock = threading.Lock()
        self._arrivals = 0
        self._context_count = 0
        self._history_count = 0
        self._dead: Optional[str] = None
        self.session: Optional[Session] = None
        self._initial = context_payload
        self._locals = scaffold.LocalsView()
        self._epilogue: Optional[str] = None
        try:
            self.setup()
        except BaseException:
            self.cleanup()  # a tool that failed to define: no sandbox left behind
            raise
        if setup_code:
            self.execute_code(setup_code)

    # -- lifecycle ---------------------------------------------------------

    def setup(self) -> None:
        """Starts the sandbox with the first context mounted as context_0."""
        values = {n: extract_tool_value(e) for n, e in self.custom_tools.items()}
        host_tools = {n: v for n, v in values.items() if callable(v)}
        code_tools = {n: v for n, v in values.items() if scaffold.is_code_tool(v)}
        data = {n: v for n, v in values.items() if n not in host_tools and n not in code_tools}
        contexts = [] if self._initial is None else [self._initial]
        concurrency = max(1, int(self.max_concurrent_subcalls)) if self.subcall_fn is not None else None
        start = self._pool.session if self._pool is not None else Session
        self.session = start(
            contexts=contexts,
            llm=self._llm,
            rlm=self._rlm if self.subcall_fn is not None else None,
            tools=host_tools,
            rlm_concurrency=concurrency,
            **self._settings,
        )
        self._context_count = len(contexts)
        self._locals.hide([*host_tools, *code_tools])
        self._locals.see(data)
        if self.compaction:
            self._locals.see(["history"])
        if contexts:
            self._see_context(0, self._initial)
        lines = [_code_binding(name, value) for name, value in data.items()]
        if code_tools:
            lines.append(scaffold.define_tools(code_tools))
        if self.compaction:
            lines.append(scaffold.epilogue(compaction=True))
        if lines:
            self._run_quiet("\n".join(lines))
        if code_tools or self.compaction:
            self._epilogue = scaffold.epilogue(self.compaction)

    def cleanup(self) -> None:
        """Removes the sandbox and everything it created (a pooled one off
        this path: the pool's `close` waits for it)."""
        session, self.session = self.session, None
        if session is None:
            return
        if self._pool is not None:
            self._pool.retire(session)
        else:
            session.close()

    def __enter__(self) -> "RlmSandboxREPL":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def __del__(self) -> None:
        try:
            self.cleanup()
        except Exception:
            pass

    # -- the host side of the sandbox's calls ------------------------------

    def _record(self, completion: RLMChatCompletion) -> None:
        """Keeps a completion with its place: the call's number and the
        prompt's index in it (answers of a batch finish in any order)."""
        item = current_call()
        with self._calls_lock:
            self._arrivals += 1
            key = (item.call, item.index, self._arrivals) if item else (sys.maxsize, 0, self._arrivals)
            self._calls.append((key, completion))

    def _llm(self, prompt: str, model: Optional[str]) -> str:
        """One llm_query prompt, through the RLM's LM handler at this
        environment's depth (as the local environment sends it)."""
        address = self.lm_handler_address
        if not address:
            return "Error: No LM handler configured"
        try:
            response = send_lm_request(address, LMRequest(prompt=prompt, model=model, depth=self.depth))
            if not response.success:
                return f"Error: {response.error}"
            text = _response_text(response.chat_completion)
        except Exception as e:
            return f"Error: LM query failed - {e}"
        self._record(response.chat_completion)
        return text

    def _rlm(self, prompt: str, model: Optional[str]) -> str:
        """One rlm_query prompt: a child RLM through `subcall_fn`."""
        assert self.subcall_fn is not None
        try:
            completion = self.subcall_fn(prompt, model)
            text = _response_text(completion)
        except Exception as e:
            return f"Error: RLM query failed - {e}"
        self._record(completion)
        return text

    # -- code --------------------------------------------------------------

    def _run_quiet(self, code: str) -> None:
        """Runs the environment's own bookkeeping code; a failure is a bug
        here (or a dead sandbox), never the model's stderr."""
        result = self._run(code, "session")
        if result.stderr:
            raise RuntimeError(f"rlm-sandbox environment bookkeeping failed: {result.stderr.strip()}")

    def execute_code(self, code: str) -> REPLResult:
        """Runs one cell (then, when rlms's scaffold needs it, the epilogue
        that restores `history` and the code tools). Its bindings outlive
        it as LocalREPL's do: none of a cell that raised, none of names
        starting with "_" (the agent undoes them, without a second cell).
        `locals` shows the names as LocalREPL's would (the values live in
        the sandbox); a sandbox that has ended answers every later cell
        with an error in stderr."""
        return self._run(code, "rlms")

    def _run(self, code: str, namespace: str) -> REPLResult:
        """execute_code in `namespace`: "session" for the environment's own
        bookkeeping, whose private `_rlm_env` must outlive its cell."""
        start = time.perf_counter()
        with self._calls_lock:
            self._calls = []
        if self.session is None or self._dead is not None:
            why = self._dead or "the environment was cleaned up"
            return REPLResult(stdout="", stderr=f"Error: the sandbox has ended ({why})", locals={}, execution_time=0.0)
        try:
            cell = self.session.exec(code, vars=self._epilogue is None, namespace=namespace)
            names = cell.vars
            if self._epilogue is not None and not cell.session_dead:
                after = self.session.exec(self._epilogue, vars=True)
                names = after.vars
                if after.stderr or after.status != "ok":
                    note = after.stderr.strip() or f"status {after.status}"
                    cell.stderr += f"\nError: the environment could not restore its names: {note}"
        except SandboxError as e:
            self._dead = str(e).split("\n", 1)[0]
            return REPLResult(
                stdout="", stderr=f"Error: {self._dead}", locals={}, execution_time=time.perf_counter() - start
            )
        stderr = cell.stderr
        if cell.status not in ("ok", "error"):
            note = f"Error: the cell ended with status {cell.status}"
            if cell.session_dead:
                self._dead = f"status {cell.status}"
                note += "; the sandbox has ended"
            stderr = (stderr + "\n" if stderr else "") + note
        with self._calls_lock:
            calls = [completion for _, completion in sorted(self._calls, key=lambda kc: kc[0])]
        return REPLResult(
            stdout=cell.stdout,
            stderr=stderr,
            locals=self._locals.build(names or []),
            execution_time=time.perf_counter() - start,
            rlm_calls=calls,
            final_answer=cell.final_answer,
        )

    # -- contexts and histories (the persistence protocol) -----------------

    def _see_context(self, index: int, payload: Any) -> None:
        """`context_N` (and `context` for 0) in `locals`, typed by the payload."""
        value = scaffold.stand_in(type(payload).__name__ if isinstance(payload, (str, dict, list)) else "str")
        self._locals.add_scaffold(f"context_{index}", value)
        if index == 0:
            self._locals.add_scaffold("context", value)

    def load_context(self, context_payload: Any) -> None:
        self.add_context(context_payload, 0)

    def add_context(self, context_payload: Any, context_index: Optional[int] = None) -> int:
        """Mounts a new context (never sent as code) as context_N. An index
        already loaded is refused: contexts are read-only mounts whose
        names the sandbox restores, so one cannot be replaced (LocalREPL
        rebinds the name)."""
        if self.session is None:
            raise RuntimeError("add_context after cleanup()")
        if context_index is None:
            context_index = self._context_count
        if context_index < self._context_count:
            raise ValueError(
                f"context_{context_index} is already loaded and rlm-sandbox cannot replace a context; "
                f"add_context(payload) without an index adds context_{self._context_count}"
            )
        added = self.session.add_context(context_payload)
        name = str(added.get("name"))
        aliases = []
        if name != f"context_{context_index}":
            aliases.append(f"context_{context_index} = {name}")
        if context_index == 0:
            aliases.append("context = context_0")
        self._see_context(context_index, context_payload)
        if aliases:
            self._run_quiet("\n".join(aliases))
        self._context_count = max(self._context_count, context_index + 1)
        return context_index

    def update_handler_address(self, address: Tuple[str, int]) -> None:
        """A new completion's LM handler. The previous answer cannot carry
        over: the sandbox resets `answer` after the cell that set it."""
        self.lm_handler_address = address

    def get_context_count(self) -> int:
        return self._context_count

    def add_history(self, message_history: List[Dict[str, Any]], history_index: Optional[int] = None) -> int:
        """Binds history_N (a copy, as JSON) in the sandbox; `history` is
        `history_0` again after every cell (unless compaction owns it)."""
        if history_index is None:
            history_index = self._history_count
        code = _code_binding(f"history_{history_index}", message_history)
        if history_index == 0 and not self.compaction:
            code += "\nhistory = history_0"
            self._epilogue = self._epilogue or scaffold.epilogue(compaction=False)
        self._run_quiet(code)
        self._history_count = max(self._history_count, history_index + 1)
        return history_index

    def get_history_count(self) -> int:
        return self._history_count

    def append_compaction_entry(self, entry: Any) -> None:
        """Appends a trajectory segment or summary to the running list;
        `history` is that list again, whatever the model bound to it."""
        if self.compaction:
            self._run_quiet(scaffold.append_entry(entry))


# -- registration ----------------------------------------------------------

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Makes `RLM(environment="rlm-sandbox", environment_kwargs={...})`
    work, with `persistent=True`, recursion (`max_depth > 1`) and
    compaction. Idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        original_get = _rlm_core.get_environment
        rlm_class = _rlm_core.RLM
        original_validate = rlm_class._validate_persistent_environment_support
        original_spawn = rlm_class._spawn_completion_context

        def get_environment(environment: str, environment_kwargs: Dict[str, Any]) -> Any:
            if environment != ENVIRONMENT:
                return original_get(environment, environment_kwargs)
            kwargs = dict(environment_kwargs)
            owner = _creating.get()
            if owner is not None:
                if owner.max_depth > 1:
                    kwargs.setdefault("subcall_fn", owner._subcall)
                if owner.compaction:
                    kwargs.setdefault("compaction", True)
            return RlmSandboxREPL(**kwargs)

        def validate(self: Any) -> None:
            if self.environment_type != ENVIRONMENT:
                original_validate(self)

        @contextlib.contextmanager
        def spawn(self: Any, prompt: Any) -> Iterator[Any]:
            token = _creating.set(self)
            try:
                context = original_spawn(self, prompt)
                entered = context.__enter__()
            finally:
                _creating.reset(token)
            try:
                yield entered
            except BaseException as e:
                if not context.__exit__(type(e), e, e.__traceback__):
                    raise
            else:
                context.__exit__(None, None, None)

        _rlm_core.get_environment = get_environment
        rlm_class._validate_persistent_environment_support = validate
        rlm_class._spawn_completion_context = spawn
        _installed = True
