"""sync.Token: the agent's lock that takes no clock read (sync.py)."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from typing import Any

import pytest

from frames import AGENT_ROOT


def load_sync() -> Any:
    if str(AGENT_ROOT) not in sys.path:
        sys.path.insert(0, str(AGENT_ROOT))
    return importlib.import_module("_rlm_agent.sync")


def test_a_token_lets_one_thread_in_at_a_time() -> None:
    """Four threads each add 2000 times to a shared count, reading it,
    giving up the GIL, then writing it back: only mutual exclusion keeps
    every addition (with a context manager that excludes nothing, the
    yield in between loses most of them)."""
    token = load_sync().Token()
    count = [0]

    def add() -> None:
        for _ in range(2000):
            with token:
                seen = count[0]
                time.sleep(0)  # Another thread runs here, if it can get in.
                count[0] = seen + 1

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count[0] == 8000
    assert not token.locked()


def test_a_token_is_given_back_when_its_block_raises() -> None:
    token = load_sync().Token()
    with pytest.raises(ValueError):
        with token:
            assert token.locked()
            raise ValueError("inside")
    assert not token.locked()
    with token:
        assert token.locked()
