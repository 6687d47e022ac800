"""Answering the sandbox's calls with host callables.

A `call` event names a kind (llm_query, rlm_query, tool) and carries one
prompt per item (a batch is one event) or a tool's arguments. Each item
runs on a thread pool sized to the session's in-flight limit, so a batch
in the sandbox runs concurrently here; the answer is sent when the last
item finishes, without a pool thread waiting for the others (a waiting
thread could starve the pool). An exception in a callable becomes that
item's error string: the code in the sandbox sees "Error: ...", the
session lives on."""

from __future__ import annotations

import inspect
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional

QueryFn = Callable[[str, Optional[str]], str]
Send = Callable[[Dict[str, Any]], None]


def tool_params(name: str, fn: Callable[..., Any]) -> List[str]:
    """The parameter names a tool is declared with (its named parameters;
    *args and **kwargs cannot be sent by name and are left out)."""
    if not name.isidentifier():
        raise ValueError(f"tool name {name!r} must be a Python identifier")
    if not callable(fn):
        raise TypeError(f"tool {name!r} must be callable, not {type(fn).__name__}")
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
    ) -> None:
        self._send = send
        self._llm = llm
        self._rlm = rlm
        self._tools = tools
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="rlm-sandbox-call")

    def answer(self, event: Mapping[str, Any]) -> None:
        """Starts answering one `call` event (returns at once)."""
        call = event.get("call")
        kind = event.get("kind")
        if kind == "tool":
            self._pool.submit(self._tool, call, event.get("name"), event.get("args"))
            return
        fn = self._rlm if kind == "rlm_query" and self._rlm is not None else self._llm
        prompts = event.get("prompts")
        if fn is None or not isinstance(prompts, list):
            why = "no llm callable was given to the Session" if fn is None else "a call without prompts"
            self._send({"op": "call_result", "call": call, "error": why})
            return
        model = event.get("model")
        results: List[Optional[str]] = [None] * len(prompts)
        left = [len(prompts)]
        lock = threading.Lock()

        def item(i: int, prompt: Any) -> None:
            try:
                answer = fn(prompt, model)
                results[i] = answer if isinstance(answer, str) else str(answer)
            except Exception as e:  # the sandbox sees it; the session goes on
                results[i] = "Error: " + _describe(e)

        def finished(_: "Future[None]") -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._send({"op": "call_result", "call": call, "results": results})

        if not prompts:
            self._send({"op": "call_result", "call": call, "results": []})
        for i, prompt in enumerate(prompts):
            self._pool.submit(item, i, prompt).add_done_callback(finished)

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
            json.dumps(value)
        except (TypeError, ValueError):
            message = f"{name}() returned a {type(value).__name__}, which is not a JSON value"
            self._send({"op": "call_result", "call": call, "error": message})
            return
        self._send({"op": "call_result", "call": call, "results": [value]})

    def close(self) -> None:
        """Stops taking calls; running callables finish on their own."""
        self._pool.shutdown(wait=False)
