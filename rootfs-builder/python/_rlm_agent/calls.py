"""Calls to the host: ids, and the callers waiting for their answers."""

from __future__ import annotations

from . import sync
from .interrupts import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .wire import Channel


# --- Calls to the host -------------------------------------------------------------


class Waiter:
    """A caller blocked until its call's `call_result` arrives."""

    def __init__(self) -> None:
        self.event = sync.Signal()
        self.outcome: dict[str, Any] = {}


class Calls:
    """Call ids (unique per session, from 1) and the callers waiting on
    them; safe from any thread."""

    def __init__(self) -> None:
        self._lock = sync.Lock()
        self._next = 1
        self._waiting: dict[int, Waiter] = {}

    @protocol
    def submit(self, channel: Channel, fields: dict[str, Any]) -> tuple[int, Waiter]:
        """Sends one `call` frame; the caller then waits on the Waiter.
        Callers check the frame's size first: an id is never skipped."""
        waiter = Waiter()
        with self._lock:
            call = self._next
            self._next += 1
            self._waiting[call] = waiter
        try:
            channel.send_json({"t": "call", "call": call, **fields})
        except BaseException:
            self.forget(call)
            raise
        return call, waiter

    @protocol
    def forget(self, call: int) -> None:
        """Stops waiting for `call` (its caller was interrupted); a late
        result is then ignored."""
        with self._lock:
            self._waiting.pop(call, None)

    def waiting(self) -> bool:
        """Whether any caller waits for a result (without the lock: one
        read of the dict, and a lock costs a system call under gVisor)."""
        return bool(self._waiting)

    def resolve(self, msg: dict[str, Any]) -> None:
        """A `call_result` (reader thread): wakes its caller, if still waiting."""
        call = msg.get("call")
        with self._lock:
            waiter = self._waiting.pop(call, None) if isinstance(call, int) else None
        if waiter is not None:
            waiter.outcome = msg
            waiter.event.set()


def _item_text(item: Any, missing: str) -> str:
    """One prompt's answer as the code sees it: a string always."""
    if isinstance(item, str):
        return item
    if item is None:
        return "Error: " + missing
    return str(item)


def outcome_texts(outcome: dict[str, Any], count: int) -> list[str]:
    """A `call_result` as `count` answers: the results, or "Error: ..."
    for each item when the call failed (as the reference library does)."""
    error = outcome.get("error")
    if isinstance(error, str):
        return ["Error: " + error] * count
    results = outcome.get("results")
    if not isinstance(results, list):
        return ["Error: the host answered without results"] * count
    missing = "the host gave %d answers for %d prompts" % (len(results), count)
    return [_item_text(results[i] if i < len(results) else None, missing) for i in range(count)]
