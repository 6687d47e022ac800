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
not reach them)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from rlm.core import rlm as _rlm_core
from rlm.core.comms_utils import LMRequest, send_lm_request
from rlm.core.types import REPLResult, RLMChatCompletion
from rlm.environments.base_env import NonIsolatedEnv, extract_tool_value, validate_custom_tools

from .errors import SandboxError
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


class RlmSandboxREPL(NonIsolatedEnv):  # type: ignore[misc]  # rlms ships no types
    """The rlms environment protocol (setup, load_context, execute_code,
    cleanup, and the persistence methods) over an rlm-sandbox Session.
    Keyword arguments besides those RLM passes are Session settings
    (`runtime`, `memory`, `timeout`, ...)."""

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
        **settings: Any,
    ) -> None:
        super().__init__(persistent=persistent, depth=depth, max_concurrent_subcalls=max_concurrent_subcalls)
        self.lm_handler_address = lm_handler_address
        self.subcall_fn = subcall_fn
        self.compaction = compaction
        self.custom_tools = custom_tools or {}
        self.custom_sub_tools = custom_sub_tools if custom_sub_tools is not None else self.custom_tools
        validate_custom_tools(self.custom_tools)
        self._settings = settings
        self._calls: List[RLMChatCompletion] = []
        self._calls_lock = threading.Lock()
        self._context_count = 0
        self._history_count = 0
        self._dead: Optional[str] = None
        self.session: Optional[Session] = None
        self._initial = context_payload
        self.setup()
        if setup_code:
            self.execute_code(setup_code)

    # -- lifecycle ---------------------------------------------------------

    def setup(self) -> None:
        """Starts the sandbox with the first context mounted as context_0."""
        tools = {n: extract_tool_value(e) for n, e in self.custom_tools.items() if callable(extract_tool_value(e))}
        contexts = [] if self._initial is None else [self._initial]
        self.session = Session(
            contexts=contexts,
            llm=self._llm,
            rlm=self._rlm if self.subcall_fn is not None else None,
            tools=tools,
            **self._settings,
        )
        self._context_count = len(contexts)
        values = {n: extract_tool_value(e) for n, e in self.custom_tools.items() if not callable(extract_tool_value(e))}
        lines = [_code_binding(name, value) for name, value in values.items()]
        if self.compaction:
            lines.append("history = []")
        if lines:
            self._run_quiet("\n".join(lines))

    def cleanup(self) -> None:
        """Removes the sandbox and everything it created."""
        session, self.session = self.session, None
        if session is not None:
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
        with self._calls_lock:
            self._calls.append(completion)

    def _llm(self, prompt: str, model: Optional[str]) -> str:
        """One llm_query prompt, through the RLM's LM handler at this
        environment's depth (as the local environment sends it)."""
        address = self.lm_handler_address
        if not address:
            return "Error: No LM handler configured"
        response = send_lm_request(address, LMRequest(prompt=prompt, model=model, depth=self.depth))
        if not response.success:
            return f"Error: {response.error}"
        self._record(response.chat_completion)
        return str(response.chat_completion.response)

    def _rlm(self, prompt: str, model: Optional[str]) -> str:
        """One rlm_query prompt: a child RLM through `subcall_fn`."""
        assert self.subcall_fn is not None
        try:
            completion = self.subcall_fn(prompt, model)
        except Exception as e:
            return f"Error: RLM query failed - {e}"
        self._record(completion)
        return str(completion.response)

    # -- code --------------------------------------------------------------

    def _run_quiet(self, code: str) -> None:
        """Runs the environment's own bookkeeping code; a failure is a bug
        here (or a dead sandbox), never the model's stderr."""
        result = self.execute_code(code)
        if result.stderr:
            raise RuntimeError(f"rlm-sandbox environment bookkeeping failed: {result.stderr.strip()}")

    def execute_code(self, code: str) -> REPLResult:
        """Runs one cell. `locals` maps each user global to its type and
        size (the values live in the sandbox); a sandbox that has ended
        answers every later cell with an error in stderr."""
        start = time.perf_counter()
        with self._calls_lock:
            self._calls = []
        if self.session is None or self._dead is not None:
            why = self._dead or "the environment was cleaned up"
            return REPLResult(stdout="", stderr=f"Error: the sandbox has ended ({why})", locals={}, execution_time=0.0)
        try:
            cell = self.session.exec(code, vars=True)
            names = cell.vars or []
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
            calls = list(self._calls)
        return REPLResult(
            stdout=cell.stdout,
            stderr=stderr,
            locals={v["name"]: f"<{v['type']}>" for v in names},
            execution_time=time.perf_counter() - start,
            rlm_calls=calls,
            final_answer=cell.final_answer,
        )

    # -- contexts and histories (the persistence protocol) -----------------

    def load_context(self, context_payload: Any) -> None:
        self.add_context(context_payload, 0)

    def add_context(self, context_payload: Any, context_index: Optional[int] = None) -> int:
        """Mounts a new context (never sent as code) as context_N."""
        if self.session is None:
            raise RuntimeError("add_context after cleanup()")
        if context_index is None:
            context_index = self._context_count
        added = self.session.add_context(context_payload)
        name = str(added.get("name"))
        aliases = []
        if name != f"context_{context_index}":
            aliases.append(f"context_{context_index} = {name}")
        if context_index == 0:
            aliases.append("context = context_0")
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
        """Binds history_N (a copy, as JSON) in the sandbox."""
        if history_index is None:
            history_index = self._history_count
        code = _code_binding(f"history_{history_index}", message_history)
        if history_index == 0 and not self.compaction:
            code += "\nhistory = history_0"
        self._run_quiet(code)
        self._history_count = max(self._history_count, history_index + 1)
        return history_index

    def get_history_count(self) -> int:
        return self._history_count

    def append_compaction_entry(self, entry: Any) -> None:
        """Appends a trajectory segment or summary to `history`."""
        if self.compaction:
            self._run_quiet(_code_binding("_rlm_entry", entry) + "\nhistory.append(_rlm_entry)\ndel _rlm_entry")


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
