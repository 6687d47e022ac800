"""The Python client of `rlm-sandbox serve` (docs/SERVE.md): Session, run
and Pool through a real server started here (the worktree's binary,
`--pool-size 1`, this test's runtime and state directory), dspy and rlms
through it, its refusals as typed exceptions, RLM_SANDBOX_SERVER, and
nothing left after (the server's `live` back to 0, the client's context
directory removed)."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import rlm_sandbox
from rlm_sandbox import (
    Pool,
    ServerBusy,
    ServerRefused,
    ServerUnreachable,
    Session,
    find_binary,
    server_stats,
)

from conftest import leftovers


class Server:
    """A running `rlm-sandbox serve`: its socket and its JSON log."""

    def __init__(self, socket: Path, proc: "subprocess.Popen[bytes]") -> None:
        self.socket = str(socket)
        self.proc = proc

    def stats(self) -> Dict[str, Any]:
        return server_stats(self.socket)

    def idle(self, wait: float = 30.0) -> Dict[str, Any]:
        """Stats once no sandbox serves a client (ending one is the server's
        work after the client hung up; a deadline, not a sleep)."""
        deadline = time.monotonic() + wait
        while True:
            stats = self.stats()
            if stats["live"] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)


def start_server(tmp_path: Path, runtime: str, state_dir: Path, *extra: str) -> Server:
    """Starts the server and waits for its `listening` event."""
    socket = tmp_path / "serve.sock"
    argv = [find_binary(), "serve", "--socket", str(socket), "--json", "--pool-size", "1",
            "--runtime", runtime, "--state-dir", str(state_dir), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == "listening":
            return Server(socket, proc)
    raise AssertionError(f"the server exited {proc.wait()} before listening")


def stop_server(server: Server, state_dir: Path) -> None:
    """SIGTERM, its exit, and nothing of its sandboxes left."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    assert not [p for p in state_dir.iterdir() if p.name.startswith("rlms-")], list(state_dir.iterdir())
    assert leftovers(state_dir, server.proc.pid) == []


@pytest.fixture
def server(tmp_path: Path, runtime: str, state_dir: Path) -> Iterator[Server]:
    serving = start_server(tmp_path, runtime, state_dir)
    try:
        yield serving
    finally:
        stop_server(serving, state_dir)


@pytest.fixture
def no_server_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLM_SANDBOX_SERVER", raising=False)


def test_a_session_keeps_state_sees_contexts_answers_calls_and_leaves_nothing(
    server: Server, tmp_path: Path, no_server_variable: None
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("from a file")
    prompts: List[str] = []

    def llm(prompt: str, model: Any = None) -> str:
        prompts.append(prompt)
        return "answer to " + prompt

    session = Session(server=server.socket, contexts=["a string context", data], llm=llm)
    try:
        assert session.server == server.socket and session.pid == server.proc.pid
        assert session.exec("x = 41").ok
        # (Printed whole, a context is redacted as an echo: compared in the sandbox.)
        cell = session.exec("print(x + 1, context == 'a string context', context_1 == 'from a file')")
        assert cell.stdout == "42 True True\n"
        assert session.exec("print(llm_query('ping'))").stdout == "answer to ping\n"
        assert prompts == ["ping"]
        assert session.add_context({"k": 3})["name"] == "context_2"
        assert session.exec("print(context_2['k'])").stdout == "3\n"
        assert server.stats()["live"] == 1
        directory = session._contexts._dir
        assert directory is not None and os.path.isdir(directory)
    finally:
        session.close()
    assert not os.path.exists(directory)  # the client owns it through a server
    assert server.idle()["live"] == 0


def test_a_dropped_session_ends_its_sandbox_and_directory(server: Server, no_server_variable: None) -> None:
    session = Session(server=server.socket, contexts=["dropped"])
    assert session.exec("print(1)").ok
    directory = session._contexts._dir
    assert directory is not None and os.path.isdir(directory)
    del session
    gc.collect()
    assert not os.path.exists(directory)
    assert server.idle()["live"] == 0


def test_a_one_shot_run_and_a_pool_of_the_server(server: Server, no_server_variable: None) -> None:
    result = rlm_sandbox.run("import sys; print(6 * 7); sys.exit(3)", server=server.socket)
    assert (result.exit_code, result.stdout) == (3, "42\n")
    admitted = server.stats()["admitted"]
    with Pool(server=server.socket) as pool:
        assert pool.server == server.socket and pool.size == 0
        with pool.session() as session:
            assert session.exec("print('pooled')").stdout == "pooled\n"
        assert pool.run("print(1 + 1)").stdout == "2\n"
    assert server.stats()["admitted"] == admitted + 2
    assert server.idle()["live"] == 0


def test_busy_after_max_live_with_a_zero_wait(
    tmp_path: Path, runtime: str, state_dir: Path, no_server_variable: None
) -> None:
    serving = start_server(tmp_path, runtime, state_dir, "--max-live", "1")
    try:
        with Session(server=serving.socket) as held:
            assert held.exec("print(1)").ok
            with pytest.raises(ServerBusy, match="max-live") as busy:
                Session(server=serving.socket, wait=0)
            assert busy.value.kind == "busy"
            with pytest.raises(ServerBusy):
                rlm_sandbox.run("print(1)", server=serving.socket, wait=0)
        assert serving.idle()["live"] == 0
        # Free again: the next request is served.
        assert rlm_sandbox.run("print(2)", server=serving.socket, wait=0).stdout == "2\n"
    finally:
        stop_server(serving, state_dir)


def test_a_setting_the_server_keeps_is_refused_by_name(server: Server, no_server_variable: None) -> None:
    with pytest.raises(ServerRefused, match="--runtime is not a client's") as refused:
        Session(server=server.socket, runtime="runc")
    assert refused.value.kind == "bad_request" and not isinstance(refused.value, ServerBusy)
    with pytest.raises(ServerRefused, match="--network"):
        rlm_sandbox.run("print(1)", server=server.socket, network=True)
    assert server.idle()["live"] == 0


def test_an_unreachable_socket_is_named_and_nothing_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server_variable: None
) -> None:
    missing = str(tmp_path / "no-server.sock")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    # A binary that could not start a sandbox anyway: no fallback is tried.
    for attempt in (
        lambda: Session(server=missing, binary="/nonexistent", contexts=["written, then removed"]),
        lambda: rlm_sandbox.run("print(1)", server=missing, binary="/nonexistent"),
        lambda: Pool(server=missing).session(),
    ):
        with pytest.raises(ServerUnreachable, match="no sandbox was started") as e:
            attempt()
        assert missing in str(e.value) and e.value.socket == missing
    # The context a Session wrote before it failed is removed.
    assert list(temporary.iterdir()) == []


def test_the_variable_is_honoured_and_false_opts_out(
    server: Server, monkeypatch: pytest.MonkeyPatch, runtime: str, state_dir: Path
) -> None:
    monkeypatch.setenv("RLM_SANDBOX_SERVER", server.socket)
    admitted = server.stats()["admitted"]
    with Session() as session:
        assert session.server == server.socket
        assert session.exec("print('via the variable')").stdout == "via the variable\n"
    assert rlm_sandbox.run("print(5)").stdout == "5\n"
    with Pool() as pool:
        assert pool.server == server.socket
    assert server.stats()["admitted"] == admitted + 2
    # server=False: a local sandbox, not counted by the server.
    with Session(server=False, runtime=runtime, state_dir=str(state_dir)) as local:
        assert local.server is None and local.pid != server.proc.pid
        assert local.exec("print(1)").ok
    assert server.stats()["admitted"] == admitted + 2
    monkeypatch.setenv("RLM_SANDBOX_SERVER", str(Path(server.socket).with_name("absent.sock")))
    with pytest.raises(ServerUnreachable):
        Session()
    assert server.idle()["live"] == 0


def test_dspy_rlm_through_the_server(server: Server, no_server_variable: None) -> None:
    import dspy
    from dspy.utils.dummies import DummyLM

    from rlm_sandbox.dspy import SandboxInterpreter
    from test_dspy import ROOT_STEPS

    # Directly, and through SandboxInterpreter.pool(server=): a pool of the
    # server's, without the prelude (the setup comes with the first cell).
    pool = SandboxInterpreter.pool(server=server.socket)
    assert pool.server == server.socket and pool.prelude is None
    for factory in (SandboxInterpreter.factory(server=server.socket), SandboxInterpreter.factory(pool=pool)):
        made: List[SandboxInterpreter] = []

        def counting() -> SandboxInterpreter:
            made.append(factory())
            return made[-1]

        admitted = server.stats()["admitted"]
        sub_lm = DummyLM({"Label: alpha": {"label": "ALPHA"}, "a fruit: beta": {"kind": "mango"}})
        rlm = dspy.RLM("context -> answer: str, count: int", max_iters=4, sub_lm=sub_lm, interpreter_factory=counting)
        with dspy.context(lm=DummyLM(ROOT_STEPS)):
            result = rlm(context="alpha beta gamma")
        assert (result.answer, result.count) == ("ALPHA/mango", 3)
        assert len(made) == 1 and made[0].session is None and made[0].pid == server.proc.pid
        assert server.stats()["admitted"] == admitted + 1
        assert server.idle()["live"] == 0
    pool.close()


def test_rlms_completion_through_the_server(server: Server, no_server_variable: None) -> None:
    from scripted_llm import ScriptedLLM
    from test_rlms import FIRST_TURN, _rlm, _root, _sub

    admitted = server.stats()["admitted"]
    with ScriptedLLM({"root": _root(list(FIRST_TURN)), "sub": _sub}) as llm:
        rlm = _rlm(llm, {"server": server.socket})
        result = rlm.completion("The fruit is a mango, from the orchard.")
    assert result.response == "SUB(Name the fruit in: The fruit is a mango, from the)|SUB(one)|SUB(two)|39"
    assert server.stats()["admitted"] > admitted
    assert server.idle()["live"] == 0


def test_a_refusal_sent_before_the_opening_is_read_is_the_error(tmp_path: Path, no_server_variable: None) -> None:
    """A server refusing the peer answers and closes before reading the
    first line: the client's write then fails (EPIPE) while the refusal is
    in its receive queue. A stand-in server that never reads shows it."""
    path = str(tmp_path / "refusing.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    refusal = b'{"ok": false, "error": {"kind": "forbidden", "message": "uid 1 may not use this server"}}\n'

    def refuse() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.sendall(refusal)
            conn.close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        # An opening far above the socket's buffer: its write must fail.
        with pytest.raises(ServerRefused, match="uid 1 may not") as e:
            rlm_sandbox.run("#" * (8 << 20), server=path)
        assert e.value.kind == "forbidden" and not isinstance(e.value, ServerBusy)
        with pytest.raises(ServerRefused, match="uid 1 may not") as e:
            Session(server=path)
        assert e.value.kind == "forbidden"
        thread.join(timeout=10)
    finally:
        listener.close()
