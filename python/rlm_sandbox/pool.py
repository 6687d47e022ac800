"""`Pool`: sandboxes started before the work is known, each handed out once.

A cold session pays the sandbox's start (~85 ms runc, ~300 ms runsc) on
every task; a standby (`rlm-sandbox session --standby`, docs/PROTOCOL.md
"Standby") pays it in advance and then waits for one `begin` carrying the
claim's flags. The pool keeps `size` standbys started in this process and
turns one into a `Session` per claim:

- By value: a standby is removed from the pool when claimed and becomes
  that Session's own process; closing the Session ends its sandbox, as
  for any Session. A sandbox that has seen a claim is never offered again.
- Each claim wakes the refill thread, which starts a replacement off the
  claim's path (claims never wait for a start; with none ready a claim
  starts a cold session at once). After `idle_timeout` seconds without a
  claim the pool ends its standbys, and refills at the next claim.
- Everything that shapes the sandbox (runtime, limits, egress settings)
  is the pool's and fixed at standby; a claim asking for a different one
  gets a cold Session with it (correct, just not pooled). The per-claim
  settings (contexts, tools, call limits) travel in `begin`.
- Nothing outlives the owner: `close()` (or the `with` block's end, or
  garbage collection through weakref.finalize, or interpreter exit) ends
  every standby and waits for its removal; a SIGKILLed owner closes the
  standbys' stdin by dying, and a standby removes its sandbox at end of
  input (the run's watchdog covers a killed standby process).
- Each sandbox boots on its own (no checkpoint is cloned), so no RNG
  state or hash seed is shared between claims.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from .binary import find_binary
from .calls import QueryFn
from .contexts import ContextValue
from .errors import ProtocolError, SandboxUnavailable
from .options import COMMON, SESSION_ONLY, environment, to_flags
from .keeper import Keeper
from .prelude import PreludeFile
from .results import Result
from .oneshot import run
from .server import ServerArg, resolve as resolve_server
from .session import Session

SIZE_VAR = "RLM_POOL_SIZE"
IDLE_VAR = "RLM_POOL_IDLE_TIMEOUT"
DEFAULT_SIZE = 2
DEFAULT_IDLE_TIMEOUT = 300.0
_NOT_SHARED = (
    "a Pool holds sandbox processes started by this process and cannot be pickled or sent to another "
    "process; make a Pool in each process (e.g. in a worker initializer)"
)


def _setting_from_env(name: str, value: Optional[float], default: float, minimum: float) -> float:
    """`value`, else the RLM_* variable `name`, else `default`; the error
    names the bad value and the accepted form."""
    source = f"{name}={os.environ.get(name)!r}" if value is None and os.environ.get(name) else None
    if value is None:
        raw = os.environ.get(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{source} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{source or repr(value)}: expected a number >= {minimum}")
    return float(value)


def _no_standbys() -> None:
    """A server's pool closes nothing: the server owns its sandboxes."""


class Pool:
    """Sandboxes started in advance, one per claim (see the module
    docstring). `size` standbys are kept (RLM_POOL_SIZE, else 2);
    `idle_timeout` seconds without a claim empty the pool until the next
    (RLM_POOL_IDLE_TIMEOUT, else 300). The other keyword arguments shape
    the sandbox, as `Session`'s do (`runtime`, `memory`, `cpus`,
    `timeout`, `network`, the egress filter's settings, ...); `binary`
    and `env` are the binary and its extra environment. `prelude` is
    Python source each sandbox runs in its session's globals before it
    waits for a claim (imports, definitions: work every claim would do
    first, done off the claim's path; each sandbox runs it on its own, so
    nothing is shared between claims); a cold fallback runs it too.

    `server` (or RLM_SANDBOX_SERVER unless `server=False`) makes it the
    pool of an `rlm-sandbox serve` (docs/SERVE.md): `session()` and
    `run()` are requests to the server, which owns the standbys and
    admits each claim (`wait=` seconds, else ServerBusy); nothing is
    started or closed here.

    A Pool belongs to the process that made it: it cannot be pickled
    (nor sent to another process; a forked child must make its own); a
    copy within the process is the pool itself."""

    def __init__(
        self,
        size: Optional[int] = None,
        *,
        idle_timeout: Optional[float] = None,
        binary: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        runtime: Optional[str] = None,
        memory: Optional[str] = None,
        cpus: Optional[float] = None,
        timeout: Optional[float] = None,
        prelude: Optional[str] = None,
        server: ServerArg = None,
        **sandbox_settings: Any,
    ) -> None:
        self._keeper: Optional[Keeper] = None
        self._server = resolve_server(server, "Pool()")
        sandbox_settings.update(runtime=runtime, memory=memory, cpus=cpus, timeout=timeout)
        if self._server is not None:
            self._serve_from(self._server, prelude, env, sandbox_settings)
            return
        per_claim = sorted(set(sandbox_settings) & SESSION_ONLY)
        if per_claim:
            raise TypeError(
                f"Pool() takes the settings that shape the sandbox; {', '.join(per_claim)} "
                "belong to each claim: pass them to pool.session()"
            )
        flags = to_flags(sandbox_settings, COMMON, "Pool()")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise ValueError(f"Pool(size={size!r}): expected an int >= 1")
        count = int(_setting_from_env(SIZE_VAR, size, DEFAULT_SIZE, 1))
        idle = _setting_from_env(IDLE_VAR, idle_timeout, DEFAULT_IDLE_TIMEOUT, 0.001)
        self._settings = {k: v for k, v in sandbox_settings.items() if v is not None}
        self._binary = binary or find_binary()
        self._env: Dict[str, str] = dict(env or {})
        self._prelude = prelude
        prelude_file = PreludeFile(prelude) if prelude is not None else None
        argv = [self._binary, "session", "--standby", *flags, *(prelude_file.flags() if prelude_file else [])]
        self._keeper = Keeper(argv, environment(self._env), count, idle, prelude_file)
        self._finalizer = weakref.finalize(self, self._keeper.close)

    def _serve_from(
        self, path: str, prelude: Optional[str], env: Optional[Mapping[str, str]], settings: Dict[str, Any]
    ) -> None:
        """A pool whose sandboxes the server at `path` owns (docs/SERVE.md):
        nothing starts here; each claim is a request to the server, whose
        pools and limits apply (`size` and `idle_timeout` are the server's:
        they are ignored). `close()` closes nothing remote."""
        if prelude is not None:
            raise ValueError(
                "Pool(server=...): a prelude cannot reach a server's sandboxes (the server starts them); "
                "run it as each session's first cell instead"
            )
        if env:
            raise TypeError("Pool(server=...) takes no env: the server's environment and RLM_* variables apply")
        wait = settings.pop("wait", None)
        to_flags(settings, COMMON, "Pool()")  # a typo is refused now, not at the first claim
        self._settings = {k: v for k, v in settings.items() if v is not None}
        if wait is not None:
            self._settings["wait"] = wait
        self._prelude = None
        self._env = {}
        self._finalizer = weakref.finalize(self, _no_standbys)

    @property
    def server(self) -> Optional[str]:
        """The `rlm-sandbox serve` socket whose sandboxes this pool hands
        out, or None for standbys of this process."""
        return self._server

    @property
    def prelude(self) -> Optional[str]:
        """The Python source every sandbox of the pool ran before its claim."""
        return self._prelude

    @property
    def size(self) -> int:
        """How many standbys the pool keeps (0 through a server: its own)."""
        return 0 if self._from_server() else self._live().size

    @property
    def ready_count(self) -> int:
        """How many standbys are ready for a claim now (here: 0 through a server)."""
        if self._from_server():
            return 0
        keeper = self._live()
        with keeper.cond:
            return len(keeper.ready)

    @property
    def started(self) -> int:
        """How many standbys the pool has started so far."""
        return 0 if self._from_server() else self._live().started

    def wait_full(self, timeout: Optional[float] = None) -> bool:
        """Waits until `size` standbys are ready (an event, not a poll):
        True then, False on timeout or close; SandboxUnavailable (with
        the standby's stderr) when a start failed. Through a server, True
        at once: there are no standbys here to wait for."""
        return True if self._from_server() else self._live().wait_full(timeout)

    def _from_server(self) -> bool:
        """True for a server's pool (ValueError once closed)."""
        if self._server is None:
            return False
        if self.closed:
            raise ValueError("the Pool is closed")
        return True

    def _live(self) -> Keeper:
        if self._keeper is None or self._keeper.closed:
            raise ValueError("the Pool is closed")
        return self._keeper

    def session(
        self,
        *,
        contexts: Iterable[ContextValue] = (),
        llm: Optional[QueryFn] = None,
        rlm: Optional[QueryFn] = None,
        tools: Optional[Mapping[str, Callable[..., Any]]] = None,
        rlm_concurrency: Optional[int] = None,
        **settings: Any,
    ) -> Session:
        """A Session on a sandbox of the pool (as `Session(...)` with the
        pool's settings). The per-claim settings (`max_llm_calls`,
        `context_load_bytes`, ...) go to the claim; a setting that shapes
        the sandbox and differs from the pool's gets a cold Session."""
        session = self._session(contexts, llm, rlm, tools, rlm_concurrency, settings)
        try:
            session.ready  # the claim's answer: errors surface here, as Session() raises them
        except BaseException:
            session.close()
            raise
        return session

    def _session(
        self,
        contexts: Iterable[ContextValue],
        llm: Optional[QueryFn],
        rlm: Optional[QueryFn],
        tools: Optional[Mapping[str, Callable[..., Any]]],
        rlm_concurrency: Optional[int],
        settings: Dict[str, Any],
        hold: bool = False,
    ) -> Session:
        """A claim that does not wait for its `ready` (the caller may write
        its first requests behind the `begin`). With `hold` the begin and
        those requests go out in one write (at the session's first wait). Through a server it
        is a Session(server=...), ready when returned (nothing is held)."""
        if self._from_server():
            return Session(
                contexts=contexts, llm=llm, rlm=rlm, tools=tools, rlm_concurrency=rlm_concurrency,
                server=self._server, **{**self._settings, **settings},
            )
        keeper = self._live()
        unknown = sorted(set(settings) - COMMON - SESSION_ONLY)
        if unknown:
            raise TypeError(
                f"pool.session() got unknown setting(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(sorted(COMMON | SESSION_ONLY))}"
            )
        claim = {k: v for k, v in settings.items() if k in SESSION_ONLY}
        shaping = {k: v for k, v in settings.items() if k in COMMON and v is not None}
        differs = {k: v for k, v in shaping.items() if self._settings.get(k) != v}
        process = None if differs else keeper.take()
        if process is None:
            # Cold: another shape (not pooled), or no standby ready yet.
            return Session(
                contexts=contexts, llm=llm, rlm=rlm, tools=tools, rlm_concurrency=rlm_concurrency,
                binary=self._binary, env=self._env, prelude=self._prelude,
                **{**self._settings, **differs, **claim},
            )
        return Session._claim(
            process, contexts=contexts, llm=llm, rlm=rlm, tools=tools, rlm_concurrency=rlm_concurrency,
            settings=claim, files=keeper.take_files(process), hold=hold,
        )

    def run(self, code: str, **settings: Any) -> Result:
        """Runs `code` once in a sandbox of the pool: the result contract of
        `rlm_sandbox.run` (`rlm-sandbox run --json`), the same egress
        filter. The code runs as `run` runs it (the session's `exec` with
        `"namespace": "script"`: a fresh `__main__` at /rlm/main.py,
        SystemExit as the exit code, non-daemon threads joined and atexit
        run at its end; docs/PROTOCOL.md "One-shot runs from a session").
        Differences: `usage` is the sandbox's so far (the agent's memory
        and CPU time included), and the sandbox is removed after the
        result is returned, off the caller's path. Settings that shape the
        sandbox and differ from the pool's run it on a cold session."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if self._from_server():
            return run(code, server=self._server, **{**self._settings, **settings})
        keeper = self._live()
        # The begin and the exec in one write (the wait releases them).
        session = self._session((), None, None, None, None, settings, hold=True)
        try:
            response = session._call("exec", code=code, namespace="script")
        except BaseException:
            session.close()
            raise
        keeper.retire_later(session)
        result = response.get("result")
        if not isinstance(result, dict):
            raise ProtocolError("a script's exec response without a result", stderr="")
        return Result.from_json(result)

    def retire(self, session: Session) -> None:
        """Ends a Session claimed from this pool without waiting for its
        sandbox's removal: its input is closed and it removes the sandbox
        (and its context directory) on its own, off the caller's path
        (even the close of its input, on the pool's thread);
        `close` waits for those still going. SandboxInterpreter.shutdown
        and RlmSandboxREPL.cleanup end their pooled sessions this way (once
        per dspy.RLM task or rlms completion: a close that waited would add
        the sandbox's removal, tens of ms, to every task). Through a server,
        or once the pool is closed, it is `session.close()`."""
        keeper = self._keeper
        if self._server is not None or keeper is None or keeper.closed:
            session.close()
            return
        keeper.retire_later(session)

    def close(self) -> None:
        """Ends every standby the pool holds and waits for their removal
        (claimed Sessions are their owners', but those handed back with
        `retire` are waited for too). Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(_NOT_SHARED)

    # Within the process a copy is the pool itself (a shared resource, as
    # a thread pool is): dspy deep-copies modules, and with them the
    # interpreter factory that holds the pool.
    def __copy__(self) -> "Pool":
        return self

    def __deepcopy__(self, memo: Dict[int, Any]) -> "Pool":
        return self
