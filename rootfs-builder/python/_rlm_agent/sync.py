"""The agent's threads, locks and signals, on `_thread` alone.

`threading` imports functools, collections and more: ~4 ms of CPU of
every sandbox's start here (scripts/bench_agent_start.py) for three threads, a few locks and flags. The agent's threads
are not `threading.Thread`s, so a user's `threading.enumerate()` does not
list them (as it lists no thread of another library started this way);
user code that imports `threading` gets the real module, unchanged.
"""

from __future__ import annotations

import _thread
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

#: A plain lock (threading.Lock is this same type).
Lock = _thread.allocate_lock
#: The calling thread's identifier (threading.get_ident).
get_ident = _thread.get_ident


#: The agent's threads by name, as their kernel thread ids (what
#: /proc/self/task lists), for diagnosis and the tests that watch one.
threads: dict[str, int] = {}


def start(name: str, target: Callable[..., Any], *args: Any) -> None:
    """Runs target(*args) on a new thread called `name`. Like a daemon
    thread, it does not keep the agent alive (the agent ends with
    os._exit); an exception escaping `target` is printed by `_thread` and
    ends only that thread, so targets catch their own."""
    _thread.start_new_thread(_named, (name, target, args))


def _named(name: str, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    threads[name] = _thread.get_native_id()
    target(*args)


class Signal:
    """A flag one thread raises and another waits for (threading.Event's
    set, is_set and wait; `take` is wait then clear, for one waiter), on a
    single lock held while the flag is down. wait() and take() are
    interrupted by a KeyboardInterrupt as Event.wait is."""

    def __init__(self) -> None:
        self._down = _thread.allocate_lock()
        self._down.acquire()

    def set(self) -> None:
        """Raises the flag (again: nothing)."""
        try:
            self._down.release()
        except RuntimeError:
            pass  # Already raised.

    def is_set(self) -> bool:
        return not self._down.locked()

    def wait(self) -> None:
        """Returns once the flag is up, leaving it up."""
        self._down.acquire()
        try:
            self._down.release()
        except RuntimeError:
            pass  # A set() in between released it already: it is up.

    def take(self) -> None:
        """Returns once the flag is up, and lowers it (one waiter only)."""
        self._down.acquire()


class Token:
    """A lock whose take and give-back make no system call when no other
    thread holds it, for `with`. Why: CPython 3.11 reads the monotonic
    clock on every lock acquire (it computes a deadline even for a try),
    and under gVisor here a clock read is a system call, tens of
    microseconds once the sandbox was idle; the frame channel and the
    interrupt state are taken on every cell's path. The token is the one
    item of a list (pop and append are atomic under the GIL). A thread
    that finds it taken retries every WAIT seconds: the agent's threads
    meet on these rarely and hold them for one write or a few stores. Not
    reentrant, as Lock is not."""

    WAIT = 0.0002

    def __init__(self) -> None:
        self._free = [True]

    def __enter__(self) -> None:
        while True:
            try:
                self._free.pop()
                return
            except IndexError:
                time.sleep(self.WAIT)

    def __exit__(self, *exc: object) -> None:
        self._free.append(True)

    def locked(self) -> bool:
        return not self._free
