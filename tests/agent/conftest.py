"""Fixtures for the agent's tests: a started agent, killed at teardown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import Agent, context_file  # noqa: E402


@pytest.fixture
def agent() -> Iterator[Agent]:
    """An agent that has not had its hello yet (its `standby` read)."""
    a = Agent()
    try:
        a.standby()
        yield a
        assert a.protocol_errors == [], a.protocol_errors
    finally:
        a.kill()


@pytest.fixture
def ready(agent: Agent) -> Agent:
    """An agent after a plain hello (no contexts, no tools)."""
    agent.hello()
    return agent


@pytest.fixture
def files() -> Iterator[Any]:
    """Makes context files; removes them afterwards."""
    cleanups = []

    def make(data: bytes, suffix: str = "") -> str:
        path, cleanup = context_file(data, suffix)
        cleanups.append(cleanup)
        return path

    yield make
    for cleanup in cleanups:
        cleanup()
