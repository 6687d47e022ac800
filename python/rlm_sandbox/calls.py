"""Answering the sandbox's calls with host callables.

A `call` event names a kind (llm_query, rlm_query, tool) and carries one
prompt per item (a batch is one event) or a tool's arguments. Each item
runs on a thread pool sized to the session's in-flight limit, so a batch
in the sandbox runs concurrently here; the answer is sent when the last
item finishes, without a pool thread waiting for the others (a waiting
thread could starve the pool). A kind may have a per-call limit: that
many items of one call run at once, the next starting as one finishes
(rlms's `max_concurrent_subcalls` for `rlm_query_batched`). While a
callable runs, `current_call()` says which call and which item it
answers, so a host recorder can keep a batch in prompt order whatever
order its items finish in. An exception in a callable, or an answer that
cannot be sent (a str that is not valid Unicode, or too large for the
session's 64 MiB lines), becomes that item's error string: the code in the sandbox sees "Error: ...", the session
lives on, and no call is left unanswered."""

from __future__ import annotations

import contextvars
import inspect
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import FunctionType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

QueryFn = Callable[[str, Optional[str]], str]
Send = Callable[[Dict[str, Any]], None]

#: The largest `call_result` line sent: the session reads lines of up to
#: 64 MiB and the agent frames of up to 64 MiB; a longer one would cost
#: the session, so the largest answers become errors instead.
MAX_RESULT_LINE = (64 << 20) - (64 << 10)


@dataclass(frozen=True)
class CallItem:
    """The item of a `call` event a host callable is answering."""

    #: The session's call number (`call` of the event; calls are numbered
    #: in the order they reach the host).
    call: int
    #: The prompt's position in its call (0 for a single query).
    index: int
    #: llm_query or rlm_query.
    kind: str


_current: "contextvars.ContextVar[Optional[CallItem]]" = contextvars.ContextVar("rlm_sandbox_call", default=None)


def current_call() -> Optional[CallItem]:
    """The call item the running `llm`/`rlm` callable answers; None
    outside one. Lets a host that records answers (rlms's `rlm_calls`)
    list a batch in prompt order, whatever order its items finish in."""
    return _current.get()


def _sendable(text: str) -> str:
    """`text` if it can be written as UTF-8 JSON; an answer with lone
    surrogates would make the result line unsendable and the call hang."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"Error: the answer is not valid Unicode text ({e.reason} at position {e.start})"
    return text


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def fit_results(results: List[Any], limit: int = MAX_RESULT_LINE) -> List[Any]:
    """`results`, with the largest answers replaced by an error string
    until the `call_result` line fits in `limit` bytes. A JSON string is
    at most 6 bytes per character, so small answers are not measured."""
    if sum(6 * len(r) if isinstance(r, str) else _json_size(r) for r in results) + 256 <= limit:
        return results
    sizes = [_json_size(r) for r in results]
    total = sum(sizes) + len(results) + 256
    out = list(results)
    for i in sorted(range(len(out)), key=lambda i: -sizes[i]):
        if total <= limit:
            break
        out[i] = f"Error: the answer of {sizes[i]} bytes does not fit in a call result ({limit} bytes at most)"
        total -= sizes[i] - _json_size(out[i])
    return out


def tool_params(name: str, fn: Callable[..., Any]) -> List[str]:
    """The parameter names a tool is declared with (its named parameters;
    *args and **kwargs cannot be sent by name and are left out)."""
    if not name.isidentifier():
        raise ValueError(f"tool name {name!r} must be a Python identifier")
    if not callable(fn):
        raise TypeError(f"tool {name!r} must be callable, not {type(fn).__name__}")
    if type(fn) is FunctionType and not ("__signature__" in fn.__dict__ or "__wrapped__" in fn.__dict__):
        # What inspect.signature reads for a plain function, from its code
        # (inspect.signature is dear, and rlm_sandbox.dspy's host tool is
        # read on every claim).
        code = fn.__code__
        named = code.co_argcount + code.co_kwonlyargcount
        return list(code.co_varnames[code.co_posonlyargcount:named])
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise ValueError(f"tool {name!r}: its signature cannot be read ({e}); wrap it in a def") from None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class CallAnswerer:
    """Runs the host callables for `call` events and sends `call_result`s."""

    def __init__(
        self,
        send: Send,
        max_workers: int,
        llm: Optional[QueryFn],
        rlm: Optional[QueryFn],
        tools: Mapping[str, Callable[..., Any]],
        per_call_limits: Optional[Mapping[str, int]] = None,
    ) -> None:
        self._send = send
        self._limits = dict(per_call_limits or {})
        self._llm = llm
        self._rlm = rlm
        self._tools = tools
        self._max_workers = max(1, max_workers)
        # Made at the first call, under this lock: a session whose code
        # calls nothing (a pool's one-shot run, most first steps) does not
        # make its threads' pool on its claim.
        self._made = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closed = False

    @property
    def _pool(self) -> ThreadPoolExecutor:
        with self._made:
            if self._closed:
                # What a shut-down executor's submit raises (callers expect it).
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="rlm-sandbox-call")
            return self._executor

    def answer(self, event: Mapping[str, Any]) -> None:
        """Starts answering one `call` event (returns at once)."""
        call = event.get("call")
        kind = event.get("kind")
        if kind == "tool":
            self._pool.submit(self._tool, call, event.get("name"), event.get("args"))
            return
        item_kind = "rlm_query" if kind == "rlm_query" and self._rlm is not None else "llm_query"
        fn = self._rlm if item_kind == "rlm_query" else self._llm
        prompts = event.get("prompts")
        if fn is None or not isinstance(prompts, list):
            why = "no llm callable was given to the Session" if fn is None else "a call without prompts"
            self._send({"op": "call_result", "call": call, "error": why})
            return
        model = event.get("model")
        number = call if isinstance(call, int) and not isinstance(call, bool) else -1
        results: List[Optional[str]] = [None] * len(prompts)
        waiting: Iterator[Tuple[int, Any]] = iter(enumerate(prompts))
        left = [len(prompts)]
        lock = threading.Lock()

        def item(i: int, prompt: Any) -> None:
            token = _current.set(CallItem(number, i, item_kind))
            try:
                answer = fn(prompt, model)
                results[i] = _sendable(answer if isinstance(answer, str) else str(answer))
            except Exception as e:  # the sandbox sees it; the session goes on
                results[i] = "Error: " + _describe(e)
            finally:
                _current.reset(token)

        def start_next() -> None:
            with lock:
                nxt = next(waiting, None)
            if nxt is None:
                return
            try:
                self._pool.submit(item, *nxt).add_done_callback(finished)
            except RuntimeError:
                pass  # The session is closing: nobody waits for the answer.

        def finished(_: "Future[None]") -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._send({"op": "call_result", "call": call, "results": fit_results(results)})
            else:
                start_next()

        if not prompts:
            self._send({"op": "call_result", "call": call, "results": []})
        limit = self._limits.get(item_kind) or len(prompts)
        for _ in range(min(limit, len(prompts))):
            start_next()

    def _tool(self, call: Any, name: Any, args: Any) -> None:
        fn = self._tools.get(name) if isinstance(name, str) else None
        if fn is None or not isinstance(args, dict):
            self._send({"op": "call_result", "call": call, "error": f"no tool {name!r} on the host"})
            return
        try:
            value = fn(**args)
        except Exception as e:
            self._send({"op": "call_result", "call": call, "error": _describe(e)})
            return
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            message = f"{name}() returned a {type(value).__name__}, which is not a JSON value of valid Unicode text"
            self._send({"op": "call_result", "call": call, "error": message})
            return
        self._send({"op": "call_result", "call": call, "results": fit_results([value])})

    def close(self) -> None:
        """Stops taking calls; running callables finish on their own."""
        with self._made:
            self._closed = True
            executor = self._executor
        if executor is not None:
            executor.shutdown(wait=False)
