"""`Session`: one sandbox running a persistent Python REPL, driven over
the session protocol (docs/PROTOCOL.md) by an `rlm-sandbox session`
process this object starts and ends."""

from __future__ import annotations

import os
import warnings
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .binary import find_binary
from .calls import CallAnswerer, QueryFn, tool_params
from .contexts import ContextFiles, ContextValue
from .errors import ProtocolError, SandboxUnavailable, SessionDead
from .options import SESSION, SESSION_ONLY, environment, to_flags
from .prelude import PreludeFile
from .process import SessionProcess
from .results import Cell
from .server import ServerArg, open_session, refusal as server_refusal, request_args, resolve as resolve_server

JSONDict = Dict[str, Any]
# Starting a sandbox takes about a second; a cold rootfs build is done
# by scripts/setup, not here, so a minute is generous.
START_TIMEOUT = 120.0
# A claimed pod adds `kubectl wait` for the claim (the binary's
# --claim-timeout, 300 s by default) before the agent starts.
CLAIM_START_TIMEOUT = START_TIMEOUT + 300.0


class RuntimeFallbackWarning(UserWarning):
    """runc ran because runsc (gVisor) was wanted and is missing: the
    sandbox shares the host kernel."""


class _CallRouter:
    """Hands `call` events to the answerer, made when `ready` arrives (on
    the reader thread, before any later line is read). Not a Session
    method: the process (kept by the finalizer) must not hold the
    Session, or it could never be garbage-collected."""

    def __init__(
        self,
        llm: Optional[QueryFn],
        rlm: Optional[QueryFn],
        tools: Mapping[str, Callable[..., Any]],
        per_call: Mapping[str, int],
    ) -> None:
        self.answerer: Optional[CallAnswerer] = None
        self.send: Optional[Callable[[JSONDict], None]] = None
        self._host = (llm, rlm, tools, per_call)

    def ready(self, event: JSONDict) -> None:
        if self.answerer is None:
            limits = event.get("limits") or {}
            llm, rlm, tools, per_call = self._host
            self.answerer = CallAnswerer(self._forward, int(limits.get("max_in_flight") or 8), llm, rlm, tools, per_call)

    def _forward(self, message: JSONDict) -> None:
        """Answers go to the process's stdin (bound once it is attached:
        a call comes only after a request, which comes after that)."""
        if self.send is None:
            raise ProtocolError("an answer before the session was attached")
        self.send(message)

    def __call__(self, event: JSONDict) -> None:
        # A call cannot come before `ready`, but be exact.
        if self.answerer is None:
            raise ProtocolError("a call event before the session was ready")
        self.answerer.answer(event)


def claim_flags(
    contexts: List[ContextValue],
    files: ContextFiles,
    rlm: Optional[QueryFn],
    tools: Mapping[str, Callable[..., Any]],
    settings: Mapping[str, Any],
    what: str,
    owned: bool = True,
) -> Tuple[List[str], List[str]]:
    """The per-claim flags (a cold session's command line, or a standby's
    `begin` args: one definition for both) and the temporary context
    files to release once the session has them."""
    flags = to_flags(settings, SESSION_ONLY, what)
    for name, fn in tools.items():
        flags += ["--tool", name + ":" + ",".join(tool_params(name, fn))]
    if rlm is not None:
        flags.append("--rlm-calls")
    temporary: List[str] = []
    for value in contexts:
        path, _, temp = files.materialize(value)
        # Absolute: a server resolves it in its own working directory.
        flags += ["--context", os.path.abspath(path)]
        if temp:
            temporary.append(path)
    # The session owns the client's temporary directory from the start
    # (contexts added later are written there too): it removes it when
    # it ends, even when this process was killed.
    # (A pool's standby was given it at its start, and a server may not
    # take one: `owned` is False then, and the client removes it.)
    return flags + (["--owned-context-dir", files.directory()] if owned else []), temporary


def remote_agent_flags(
    agent_command: Optional[str],
    k8s_pool: Optional[str],
    namespace: Optional[str],
    kubectl: Optional[str],
    has_contexts: bool,
) -> List[str]:
    """The flags of an agent elsewhere (`--agent-command`, `--k8s-claim`),
    refusing what the binary would refuse only after a process start (or,
    for a claim, after a pod was claimed)."""
    if agent_command is not None and k8s_pool is not None:
        raise ValueError(
            "Session(): give agent_command (a command reaching an agent) or k8s_pool "
            "(a warm pool to claim a pod from), not both"
        )
    if k8s_pool is None and (namespace is not None or kubectl is not None):
        raise ValueError("Session(): namespace and kubectl go with k8s_pool='POOL' (the warm pool to claim from)")
    remote = agent_command is not None or k8s_pool is not None
    if remote and has_contexts:
        raise ValueError(
            "Session(): contexts cannot reach an agent in a pod or another container (they are "
            "bind-mounted into a local sandbox); load the data with a cell or a tool instead"
        )
    if agent_command is not None:
        if not isinstance(agent_command, str) or not agent_command.strip():
            raise ValueError(
                f"Session(): agent_command must be a non-empty shell command, not {agent_command!r}"
            )
        return ["--agent-command", agent_command]
    if k8s_pool is None:
        return []
    flags = ["--k8s-claim", k8s_pool]
    if namespace is not None:
        flags += ["--namespace", namespace]
    if kubectl is not None:
        flags += ["--kubectl", kubectl]
    return flags


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
    default or its RLM_* variable. `prelude` is Python source the sandbox
    runs in the session's globals before it is ready (`--prelude-file`).
    `rlm_sandbox.Pool.session` makes one
    from a sandbox started in advance.

    The sandbox may be elsewhere (docs/KUBERNETES.md): `agent_command`
    is a shell command whose stdin and stdout reach the agent (`kubectl
    exec -i ...`, `podman exec -i ...`); `k8s_pool` claims a pod from that
    agent-sandbox warm pool (in `namespace`, with the `kubectl` binary),
    runs the agent there and deletes the claim when the session ends. The
    host side (egress filter, call answers, limits) stays here. Context
    files cannot reach such an agent (they are bind-mounted locally):
    they are refused before anything starts.

    `server` is the socket of an `rlm-sandbox serve` (docs/SERVE.md) that
    starts (or claims from its pool) the sandbox; None (the default)
    uses RLM_SANDBOX_SERVER when it is set, False never does. Through a
    server the settings are the request's flags (limits and the claim's;
    a setting the server keeps to itself is refused by name as
    ServerRefused), `wait` is the admission wait in seconds (ServerBusy
    when it runs out), and calls are answered here as always. An
    unreachable socket is ServerUnreachable: nothing starts locally.
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
        agent_command: Optional[str] = None,
        k8s_pool: Optional[str] = None,
        namespace: Optional[str] = None,
        kubectl: Optional[str] = None,
        prelude: Optional[str] = None,
        server: ServerArg = None,
        wait: Optional[float] = None,
        **settings: Any,
    ) -> None:
        contexts = list(contexts)
        settings.update(runtime=runtime, memory=memory, cpus=cpus, timeout=timeout)
        path = resolve_server(server, "Session()")
        if path is not None:
            self._connect(path, contexts, llm, rlm, tools, rlm_concurrency, settings, wait, prelude,
                          agent_command or k8s_pool, env)
            return
        if wait is not None:
            raise TypeError("Session(): wait= is a server request's admission wait; it goes with server=")
        remote_flags = remote_agent_flags(agent_command, k8s_pool, namespace, kubectl, bool(contexts))
        sandbox = {k: v for k, v in settings.items() if k not in SESSION_ONLY}
        claim = {k: v for k, v in settings.items() if k in SESSION_ONLY}
        # A typo is refused before any lookup.
        sandbox_flags = to_flags(sandbox, SESSION, "Session()")
        self._prepare(llm, rlm, tools, rlm_concurrency)
        if k8s_pool is not None:
            self._start_timeout = CLAIM_START_TIMEOUT
        prelude_file = PreludeFile(prelude) if prelude is not None else None
        try:
            flags, temporary = claim_flags(contexts, self._contexts, rlm, self._tools, claim, "Session()")
            if prelude_file is not None:
                flags += prelude_file.flags()
            argv = [binary or find_binary(), "session", *remote_flags, *sandbox_flags, *flags]
            process = SessionProcess(
                argv, environment(env or {}), self._router, self._router.ready,
                pass_fds=prelude_file.pass_fds() if prelude_file is not None else (),
            )
            if prelude_file is not None:
                prelude_file.close()  # the process has its own copy
            self._attach(process, None, temporary)
            self._await_ready()
        except BaseException:
            if prelude_file is not None:
                prelude_file.close()
            self.close()
            raise

    def _connect(
        self,
        path: str,
        contexts: List[ContextValue],
        llm: Optional[QueryFn],
        rlm: Optional[QueryFn],
        tools: Optional[Mapping[str, Callable[..., Any]]],
        rlm_concurrency: Optional[int],
        settings: Dict[str, Any],
        wait: Optional[float],
        prelude: Optional[str],
        remote: Optional[str],
        env: Optional[Mapping[str, str]],
    ) -> None:
        """A session on a sandbox of the `rlm-sandbox serve` at `path`: its
        flags go in the opening line (the server refuses, by name, any it
        does not let a client set), then the session protocol runs over
        the connection. The client keeps its context directory (the
        server may not take one to remove) and removes it on close."""
        if remote:
            raise ValueError("Session(): agent_command and k8s_pool start no sandbox; they do not go with server=")
        if prelude is not None:
            raise ValueError(
                "Session(server=...): a prelude cannot reach a server (it travels as a file descriptor); "
                "run it as the first cell instead"
            )
        if env:
            raise TypeError("Session(server=...) takes no env: the server's environment and RLM_* variables apply")
        # A typo is refused before the connection.
        sandbox_flags = to_flags({k: v for k, v in settings.items() if k not in SESSION_ONLY}, SESSION, "Session()")
        claim = {k: v for k, v in settings.items() if k in SESSION_ONLY}
        self._prepare(llm, rlm, tools, rlm_concurrency)
        self._server: Optional[str] = path
        self._start_timeout = START_TIMEOUT + (wait or 0.0)
        try:
            flags, temporary = claim_flags(contexts, self._contexts, rlm, self._tools, claim, "Session()", owned=False)
            channel = open_session(path, request_args(wait, [*sandbox_flags, *flags]))
            self._attach(SessionProcess.over(channel, self._router, self._router.ready), None, temporary)
            self._await_ready()
        except BaseException:
            self.close()
            raise

    @classmethod
    def _claim(
        cls,
        process: SessionProcess,
        *,
        contexts: Iterable[ContextValue] = (),
        llm: Optional[QueryFn] = None,
        rlm: Optional[QueryFn] = None,
        tools: Optional[Mapping[str, Callable[..., Any]]] = None,
        rlm_concurrency: Optional[int] = None,
        settings: Mapping[str, Any],
        files: Optional[ContextFiles] = None,
        hold: bool = False,
    ) -> "Session":
        """A Session of a standby process (`session --standby` that said
        `standby`): writes its `begin` and returns without waiting, so the
        caller may write its first requests behind it; `ready` (or any
        request) waits for the claim. `files`: the context directory the
        standby was started owning (`--owned-context-dir`). `hold`: the
        `begin` is held (SessionProcess.hold) with the requests the caller
        writes behind it, until a wait writes them in one go. Only rlm_sandbox.pool calls this."""
        self = cls.__new__(cls)
        self._prepare(llm, rlm, tools, rlm_concurrency)
        if files is not None:
            self._contexts = files  # the standby owns its directory already
        try:
            flags, temporary = claim_flags(
                list(contexts), self._contexts, rlm, self._tools, settings, "Pool.session()", owned=files is None
            )
            # Before `begin` is written: its `ready` makes the answerer.
            self._router.send = process.send
            process.set_handlers(self._router, self._router.ready)
            # The standby line has what a claim's `ready` leaves out (the
            # runtime); the claim's own fields win.
            standby = process.first.result(timeout=0)
            self._standby = {k: v for k, v in standby.items() if k not in ("event", "id")}
            if hold:
                process.hold()
            # The temporary files stay until the session ends (it removes
            # their directory): a claim's echo index reads them on its own
            # thread after `ready`, which comes within a millisecond.
            self._attach(process, process.submit("begin", args=flags), [])
        except BaseException:
            self._process = self._process or process
            self.close()
            raise
        return self

    def _prepare(
        self,
        llm: Optional[QueryFn],
        rlm: Optional[QueryFn],
        tools: Optional[Mapping[str, Callable[..., Any]]],
        rlm_concurrency: Optional[int],
    ) -> None:
        self._contexts = ContextFiles()
        self._server = None
        self._start_timeout = START_TIMEOUT
        self._process: Optional[SessionProcess] = None
        self._ready: Optional[JSONDict] = None
        self._standby: JSONDict = {}
        self._tools: Mapping[str, Callable[..., Any]] = tools if tools is not None else {}
        if rlm_concurrency is not None and (not isinstance(rlm_concurrency, int) or rlm_concurrency < 1):
            raise ValueError(f"rlm_concurrency must be a positive int or None, not {rlm_concurrency!r}")
        per_call = {"rlm_query": rlm_concurrency} if rlm_concurrency else {}
        self._router = _CallRouter(llm, rlm, self._tools, per_call)

    def _attach(
        self, process: SessionProcess, begin: "Optional[Future[JSONDict]]", temporary: List[str]
    ) -> None:
        """Takes `process` (its `ready` is its first line, or the answer to
        `begin`): the one path from a process to a Session."""
        self._process = process
        self._router.send = process.send
        self._finalizer = weakref.finalize(self, _finalize, process, self._contexts, self._router)
        self._pending_ready = begin if begin is not None else process.first
        self._temporary = temporary

    def _await_ready(self) -> JSONDict:
        """The `ready` event, waiting for it the first time; a session that
        could not start (or a refused claim) is SandboxUnavailable."""
        if self._ready is not None:
            return self._ready
        process = self._live()
        try:
            # Read here, not handed over by the reader thread: a wake-up less
            # (the requests written behind a claim's begin come right after).
            first = process.wait(self._pending_ready, self._start_timeout)
        except SessionDead as e:
            if self._server is not None:
                raise SandboxUnavailable(
                    f"the rlm-sandbox server at {self._server} ended the connection before the session was "
                    f"ready ({e})", kind=e.kind,
                ) from None
            raise SandboxUnavailable(
                "rlm-sandbox session could not start; its stderr says why", kind=e.kind, stderr=e.stderr
            ) from None
        except TimeoutError:
            raise SandboxUnavailable(
                f"rlm-sandbox session was not ready after {self._start_timeout:.0f} s", stderr=process.stderr_tail()
            ) from None
        if first.get("event") != "ready":
            error = first.get("error") or {}
            process.mark_dead("it did not start")
            if self._server is not None:
                raise server_refusal(error, self._server)
            raise SandboxUnavailable(
                f"the sandbox could not start ({error.get('kind')}): {error.get('message')}",
                kind=error.get("kind"),
                stderr=process.stderr_tail(),
            )
        self._ready = first = {**self._standby, **first}
        for path in self._temporary:
            self._contexts.release(path)
        runtime_info = first.get("runtime") or {}
        if runtime_info.get("fallback"):
            warnings.warn(
                "rlm-sandbox: runsc (gVisor) is missing, the sandbox runs on runc and shares the host kernel",
                RuntimeFallbackWarning,
                stacklevel=3,
            )
        return first

    @property
    def ready(self) -> JSONDict:
        """The session's `ready` event (limits, runtime, contexts, ...)."""
        return self._await_ready()

    @property
    def runtime(self) -> str:
        """The runtime the sandbox runs on (runsc or runc)."""
        return str((self.ready.get("runtime") or {}).get("name"))

    @property
    def server(self) -> Optional[str]:
        """The `rlm-sandbox serve` socket this session runs through, or None."""
        return self._server

    @property
    def pid(self) -> int:
        """The `rlm-sandbox session` process's pid (through a server: the
        server's, there being no process of the session's own)."""
        return self._live().pid

    def _live(self) -> SessionProcess:
        if self._process is None:
            raise SessionDead("the session is closed", kind="session_dead")
        return self._process

    def _call(self, op: str, **fields: Any) -> JSONDict:
        return self._response(op, self._live().submit(op, **fields))

    def _response(self, op: str, future: "Future[JSONDict]") -> JSONDict:
        """A request's response; a claim's `ready` is waited for first (the
        request was written behind its `begin`)."""
        self._await_ready()
        process = self._live()
        response = process.wait(future)
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
        self,
        code: str,
        timeout: Optional[float] = None,
        *,
        vars: bool = False,
        namespace: str = "session",
        keep: Sequence[str] = (),
        restore: Sequence[str] = (),
        setup: Optional[str] = None,
    ) -> Cell:
        """Runs `code` in the REPL's globals; with `vars`, `Cell.vars` lists
        the globals afterwards (what `vars()` returns, without its round
        trip). When the code ends in an expression whose value is not
        None, `Cell.value` holds it (its repr and JSON form; nothing is
        printed for it). A killed or out-of-memory sandbox returns its Cell (status
        oom, killed, ...) and every later call raises SessionDead.
        `namespace="rlms"` keeps only what rlms's LocalREPL keeps of a cell:
        nothing of one that did not end ok, no names starting with "_"
        (docs/PROTOCOL.md, `exec`); the default keeps every binding.
        `keep` names globals the sandbox keeps after a cell that ended ok,
        `restore` globals bound to their kept values before the code runs:
        inputs rebound at every step without a cell of their own. `setup`
        is code run on its own before `code`, in the same cell (a step's
        preparation and the step in one round trip): `code` runs only when
        it ended ok (`Cell.setup` says how it ended), and `keep` then keeps
        what the setup bound, not what `code` rebinds."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if namespace not in ("session", "rlms"):
            raise ValueError(f'namespace must be "session" or "rlms", not {namespace!r}')
        fields: JSONDict = {"code": code}
        if vars:
            fields["vars"] = True
        if namespace != "session":
            fields["namespace"] = namespace
        if setup is not None:
            if not isinstance(setup, str):
                raise TypeError(f"setup must be a str, not {type(setup).__name__}")
            fields["setup"] = setup
        for field, names in (("keep", keep), ("restore", restore)):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"{field} must be a sequence of names (str), not {names!r}")
            if names:
                fields[field] = list(names)
        if timeout is not None:
            fields["timeout"] = timeout
        return self._cell(self._call("exec", **fields))

    def _cell(self, response: JSONDict) -> Cell:
        cell_json = response.get("cell")
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
        process, self._process = getattr(self, "_process", None), None
        router = getattr(self, "_router", None)
        answerer = router.answerer if router is not None else None
        if process is not None:
            process.close()
        if answerer is not None:
            answerer.close()
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        contexts = getattr(self, "_contexts", None)
        if contexts is not None:
            contexts.close()

    def _end_input(self) -> Tuple[Optional[SessionProcess], ContextFiles]:
        """Ends the session without waiting: its input is closed (the
        session then removes its sandbox and its owned context directory,
        and exits, as at `close`) and its client side closed. Returns the
        process and the context files for whoever waits for its exit and
        releases them then (a pool, off the caller's path)."""
        process, self._process = getattr(self, "_process", None), None
        if process is not None:
            process.end_input()
        contexts, self._contexts = self._contexts, ContextFiles()
        self.close()
        return process, contexts

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
