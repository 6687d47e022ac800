"""Fixtures for the agent's tests: a started agent, killed at teardown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import Agent  # noqa: E402


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
