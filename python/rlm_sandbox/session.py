"""`Session`: one sandbox running a persistent Python REPL, driven over
the session protocol (docs/PROTOCOL.md) by an `rlm-sandbox session`
process this object starts and ends."""

from __future__ import annotations

import os
import warnings
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from .binary import find_binary
from .calls import CallAnswerer, QueryFn, tool_params
from .contexts import ContextFiles, ContextValue
from .errors import ProtocolError, SandboxUnavailable, SessionDead
from .options import SESSION, environment, to_flags
from .process import SessionProcess
from .results import Cell

JSONDict = Dict[str, Any]
# Starting a sandbox takes about a second; a cold rootfs build is done
# by scripts/setup, not here, so a minute is generous.
START_TIMEOUT = 120.0


class RuntimeFallbackWarning(UserWarning):
    """runc ran because runsc (gVisor) was wanted and is missing: the
    sandbox shares the host kernel."""


class _CallRouter:
    """Hands `call` events to the answerer once there is one. Not a
    Session method: the process (kept by the finalizer) must not hold the
    Session, or it could never be garbage-collected."""

    def __init__(self) -> None:
        self.answerer: Optional[CallAnswerer] = None

    def __call__(self, event: JSONDict) -> None:
        # A call cannot come before `ready`, but be exact.
        if self.answerer is None:
            raise ProtocolError("a call event before the session was ready")
        self.answerer.answer(event)


class Session:
    """A stateful sandboxed Python REPL.

    `contexts` are paths (`pathlib.Path`), or `str`/`dict`/`list` values
    written to private temporary files; each is `context_N` (and `ctxs[N]`)
    in the sandbox, the first also `context` and `ctx`. `llm(prompt, model)`
    answers `llm_query*` (and `rlm_query*` unless `rlm` is given); `tools`
    maps names to host functions the code may call. The prompts of all
    calls are answered here on at most `llm_max_in_flight` threads (the
    session's in-flight limit, 8 by default: what bounds an
    `llm_query_batched`); `rlm_concurrency` bounds the prompts of one
    `rlm_query_batched` answered at once (rlms's `max_concurrent_subcalls`). Other settings are the
    `rlm-sandbox session` flags with `_` for `-` (`runtime="runsc"`,
    `memory="512m"`, `max_llm_calls=100`, ...); None keeps the binary's
    default or its RLM_* variable.
    """

    def __init__(
        self,
        *,
        contexts: Iterable[ContextValue] = (),
        llm: Optional[QueryFn] = None,
        rlm: Optional[QueryFn] = None,
        tools: Optional[Mapping[str, Callable[..., Any]]] = None,
        rlm_concurrency: Optional[int] = None,
        runtime: Optional[str] = None,
        memory: Optional[str] = None,
        cpus: Optional[float] = None,
        timeout: Optional[float] = None,
        binary: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        **settings: Any,
    ) -> None:
        self._contexts = ContextFiles()
        self._process: Optional[SessionProcess] = None
        self._tools: Mapping[str, Callable[..., Any]] = tools if tools is not None else {}
        if rlm_concurrency is not None and (not isinstance(rlm_concurrency, int) or rlm_concurrency < 1):
            raise ValueError(f"rlm_concurrency must be a positive int or None, not {rlm_concurrency!r}")
        self._per_call = {"rlm_query": rlm_concurrency} if rlm_concurrency else {}
        try:
            self._start(list(contexts), llm, rlm, runtime, memory, cpus, timeout, binary, env or {}, settings)
        except BaseException:
            self.close()
            raise

    def _start(
        self,
        contexts: List[ContextValue],
        llm: Optional[QueryFn],
        rlm: Optional[QueryFn],
        runtime: Optional[str],
        memory: Optional[str],
        cpus: Optional[float],
        timeout: Optional[float],
        binary: Optional[str],
        env: Mapping[str, str],
        settings: Dict[str, Any],
    ) -> None:
        settings.update(runtime=runtime, memory=memory, cpus=cpus, timeout=timeout)
        flags = to_flags(settings, SESSION, "Session()")  # a typo is refused before any lookup
        # The session owns the client's temporary directory from the start
        # (contexts added later are written there too): it removes it when
        # it ends, even when this process was killed.
        argv = [binary or find_binary(), "session", *flags, "--owned-context-dir", self._contexts.directory()]
        for name, fn in self._tools.items():
            argv += ["--tool", name + ":" + ",".join(tool_params(name, fn))]
        if rlm is not None:
            argv.append("--rlm-calls")
        temporary: List[str] = []
        for value in contexts:
            path, _, temp = self._contexts.materialize(value)
            argv += ["--context", path]
            if temp:
                temporary.append(path)
        self._router = _CallRouter()
        self._process = SessionProcess(argv, environment(env), self._router)
        self._finalizer = weakref.finalize(self, _finalize, self._process, self._contexts, self._router)
        try:
            first = self._process.first_line(timeout=START_TIMEOUT)
        except SessionDead as e:
            raise SandboxUnavailable(
                "rlm-sandbox session could not start; its stderr says why", kind=e.kind, stderr=e.stderr
            ) from None
        except TimeoutError:
            raise SandboxUnavailable(
                f"rlm-sandbox session was not ready after {START_TIMEOUT:.0f} s", stderr=self._process.stderr_tail()
            ) from None
        if first.get("event") == "error":
            error = first.get("error") or {}
            raise SandboxUnavailable(
                f"the sandbox could not start ({error.get('kind')}): {error.get('message')}",
                kind=error.get("kind"),
                stderr=self._process.stderr_tail(),
            )
        self.ready: JSONDict = first
        for path in temporary:
            self._contexts.release(path)
        runtime_info = first.get("runtime") or {}
        if runtime_info.get("fallback"):
            warnings.warn(
                "rlm-sandbox: runsc (gVisor) is missing, the sandbox runs on runc and shares the host kernel",
                RuntimeFallbackWarning,
                stacklevel=3,
            )
        limits = first.get("limits") or {}
        self._router.answerer = CallAnswerer(
            self._process.send, int(limits.get("max_in_flight") or 8), llm, rlm, self._tools, self._per_call
        )

    @property
    def runtime(self) -> str:
        """The runtime the sandbox runs on (runsc or runc)."""
        return str((self.ready.get("runtime") or {}).get("name"))

    @property
    def pid(self) -> int:
        """The `rlm-sandbox session` process's pid."""
        return self._live().pid

    def _live(self) -> SessionProcess:
        if self._process is None:
            raise SessionDead("the session is closed", kind="session_dead")
        return self._process

    def _call(self, op: str, **fields: Any) -> JSONDict:
        process = self._live()
        response = process.request(op, **fields)
        if response.get("ok") is True:
            return response
        error = response.get("error") or {}
        kind, message = error.get("kind"), error.get("message", "")
        if kind == "session_dead":
            process.mark_dead(message)
            raise SessionDead(f"the session's sandbox has ended: {message}", kind=kind, stderr=process.stderr_tail())
        if kind == "bad_request":
            raise ValueError(f"{op}: {message}")
        raise ProtocolError(f"{op} failed ({kind}): {message}", kind=kind, stderr=process.stderr_tail())

    def exec(
        self, code: str, timeout: Optional[float] = None, *, vars: bool = False, namespace: str = "session"
    ) -> Cell:
        """Runs `code` in the REPL's globals; with `vars`, `Cell.vars` lists
        the globals afterwards (what `vars()` returns, without its round
        trip). When the code ends in an expression whose value is not
        None, `Cell.value` holds it (its repr and JSON form; nothing is
        printed for it). A killed or out-of-memory sandbox returns its Cell (status
        oom, killed, ...) and every later call raises SessionDead.
        `namespace="rlms"` keeps only what rlms's LocalREPL keeps of a cell:
        nothing of one that did not end ok, no names starting with "_"
        (docs/PROTOCOL.md, `exec`); the default keeps every binding."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if namespace not in ("session", "rlms"):
            raise ValueError(f'namespace must be "session" or "rlms", not {namespace!r}')
        fields: JSONDict = {"code": code}
        if vars:
            fields["vars"] = True
        if namespace != "session":
            fields["namespace"] = namespace
        if timeout is not None:
            fields["timeout"] = timeout
        cell_json = self._call("exec", **fields).get("cell")
        if not isinstance(cell_json, dict):
            raise ProtocolError("an exec response without a cell")
        cell = Cell.from_json(cell_json)
        if cell.session_dead:
            self._live().mark_dead(f"the sandbox ended in a cell (status {cell.status})")
        return cell

    def vars(self) -> List[JSONDict]:
        """The user's globals: `[{name, type, size}]` (names and types
        filtered as output is: code can name a global anything)."""
        return list(self._call("vars").get("vars") or [])

    def get(self, name: str) -> str:
        """A capped `repr` of the global `name` (KeyError if it has none),
        filtered as output is: a secret or a reproduction of a context in
        it reads `[REDACTED:<kind>]`."""
        try:
            return str(self._call("get", name=name).get("repr"))
        except ValueError as e:
            if "no variable" in str(e):
                raise KeyError(name) from None
            raise

    def add_context(self, ctx: ContextValue, format: Optional[str] = None) -> JSONDict:
        """Adds a context to the live session (mounted, not copied through
        the protocol); returns its description, `name` is `context_N`."""
        path, fmt, temp = self._contexts.materialize(ctx)
        fields: JSONDict = {"path": os.path.abspath(path)}
        if format or fmt:
            fields["format"] = format or fmt
        try:
            return dict(self._call("add_context", **fields).get("context") or {})
        finally:
            if temp:
                self._contexts.release(path)

    def reset(self) -> None:
        """Fresh globals; the contexts stay."""
        self._call("reset")

    def stats(self) -> JSONDict:
        """The sandbox's usage so far (memory peak, CPU time, OOM kills)."""
        return self._call("stats")

    @property
    def closed(self) -> bool:
        return self._process is None

    def close(self) -> None:
        """Ends the session: the sandbox and everything it created are
        removed, and so are this client's temporary context files."""
        process, self._process = self._process, None
        router = getattr(self, "_router", None)
        answerer = router.answerer if router is not None else None
        if process is not None:
            process.close()
        if answerer is not None:
            answerer.close()
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        self._contexts.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _finalize(process: SessionProcess, contexts: ContextFiles, router: _CallRouter) -> None:
    """At garbage collection or interpreter exit: end the process (which
    removes its sandbox) and the temporary files. Holds no Session."""
    process.terminate(5.0)
    if router.answerer is not None:
        router.answerer.close()
    contexts.close()
