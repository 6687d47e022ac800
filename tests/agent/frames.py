"""A host's end of the agent's frame protocol, for tests (docs/PROTOCOL.md,
"Agent frames"): starts the agent as a subprocess, writes host messages,
reads its frames on a thread, and runs cells while answering their calls.

The agent runs with the host's python3 straight from the source tree: these
tests pin its protocol and its Python behaviour fast. How it runs inside a
real sandbox (the rootfs's interpreter, the sandbox user, the mounts) is
what tests/session.rs proves on runc and runsc.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[2]
#: Where the package `_rlm_agent` is, in the source tree.
AGENT_ROOT = REPO / "rootfs-builder" / "python"

JSON, STDOUT, STDERR = 0x4A, 0x31, 0x32
MAX_FRAME = (8 << 20) + (64 << 10)

Message = dict[str, Any]
#: Answers a `call` message: the `call_result` fields (`results` or `error`).
Answerer = Callable[[Message], Message]


def encode(kind: int, payload: bytes) -> bytes:
    """One frame: u32 big-endian length of type byte + payload."""
    return struct.pack(">IB", len(payload) + 1, kind) + payload


def encode_msg(msg: Message) -> bytes:
    return encode(JSON, json.dumps(msg).encode())


def echo(call: Message) -> Message:
    """Answers every prompt with "re:<prompt>", tools with their args."""
    if call["kind"] == "tool":
        return {"results": [{"tool": call["name"], "args": call["args"]}]}
    return {"results": ["re:" + p for p in call["prompts"]]}


@dataclass
class Cell:
    """What one `exec` produced, in arrival order."""

    done: Message
    stdout: bytes = b""
    stderr: bytes = b""
    calls: list[Message] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.done["status"])

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()


def command() -> list[str]:
    """How the agent is started (see the module doc)."""
    # As src/bundle/spec.rs::agent_args starts it, from the source tree
    # (-I ignores PYTHONPATH, so the path goes in by hand).
    start = ("import sys; sys.path.insert(0, %r); "
             "import _rlm_agent.__main__ as agent; agent.main()" % str(AGENT_ROOT))
    return [sys.executable, "-I", "-B", "-c", start]


def ctx_spec(index: int, path: str, fmt: str = "text") -> Message:
    """A `hello`'s or `add_context`'s description of context file `path`."""
    return {"index": index, "path": path, "format": fmt, "size": os.path.getsize(path)}


def context_file(data: bytes, suffix: str = "") -> tuple[str, Callable[[], None]]:
    """A context file the agent can open: (its path, cleanup)."""
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    return path, lambda: os.unlink(path)


class Agent:
    """The agent as a subprocess, with a frame reader thread."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.frames: "queue.Queue[Optional[tuple[int, bytes]]]" = queue.Queue()
        self.protocol_errors: list[str] = []
        self.next_cell = 1
        self.next_req = 1
        self._write_lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    # -- raw frames

    def _read(self) -> None:
        """Reads frames strictly, as the host does; None at end of stream."""
        out = self.proc.stdout
        assert out is not None
        while True:
            header = out.read(4)
            if not header:
                break
            if len(header) < 4:
                self.protocol_errors.append("short header")
                break
            (length,) = struct.unpack(">I", header)
            if length == 0 or length > MAX_FRAME:
                self.protocol_errors.append("bad length %d" % length)
                break
            body = out.read(length)
            if len(body) < length:
                self.protocol_errors.append("short body")
                break
            if body[0] not in (JSON, STDOUT, STDERR):
                self.protocol_errors.append("bad type %r" % body[0])
                break
            if body[0] == JSON:
                try:
                    msg = json.loads(body[1:])
                    assert isinstance(msg, dict) and isinstance(msg.get("t"), str)
                except Exception as e:  # noqa: BLE001 - any breakage is a protocol error
                    self.protocol_errors.append("bad json %r: %s" % (body[1:200], e))
                    break
            if len(body) - 1 > (64 << 10) and body[0] != JSON:
                self.protocol_errors.append("output chunk of %d bytes" % (len(body) - 1))
            self.frames.put((body[0], body[1:]))
        self.frames.put(None)

    def send(self, msg: Message) -> None:
        self.send_raw(encode_msg(msg))

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def frame(self, timeout: float = 10.0) -> Optional[tuple[int, bytes]]:
        """The next frame; None at the agent's end of stream."""
        return self.frames.get(timeout=timeout)

    def msg(self, timeout: float = 10.0) -> Message:
        """The next J message, skipping output frames."""
        while True:
            frame = self.frame(timeout)
            assert frame is not None, "the agent ended: %r" % self.stderr_text()
            if frame[0] == JSON:
                msg: Message = json.loads(frame[1])
                return msg

    # -- protocol steps

    def standby(self) -> Message:
        """Waits for the agent's first message, `standby`, which it sends
        unasked once it is up."""
        msg = self.msg()
        assert msg["t"] == "standby", msg
        return msg

    def hello(self, contexts: Optional[list[Message]] = None, tools: Optional[list[Message]] = None,
              max_load_bytes: int = 64 << 20, max_frame: int = MAX_FRAME,
              max_prompt_bytes: int = 4 << 20, max_output_bytes: int = 256 << 20) -> Message:
        self.send({"t": "hello", "contexts": contexts or [], "tools": tools or [],
                   "max_load_bytes": max_load_bytes, "max_frame": max_frame,
                   "max_prompt_bytes": max_prompt_bytes, "max_output_bytes": max_output_bytes})
        ready = self.msg()
        assert ready["t"] == "ready", ready
        return ready

    def start_exec(self, code: str, **fields: Any) -> int:
        cell = self.next_cell
        self.next_cell += 1
        self.send({"t": "exec", "cell": cell, "code": code, **fields})
        return cell

    def finish(self, cell: int, answer: Optional[Answerer] = echo, timeout: float = 20.0,
               on_limit: Optional[Callable[[Message], None]] = None) -> Cell:
        """Collects the cell's frames until its `done`, answering calls
        (and handing an `output_limit` message to `on_limit`)."""
        stdout, stderr, calls = bytearray(), bytearray(), []
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frame(max(deadline - time.monotonic(), 0.01))
            assert frame is not None, "the agent ended: %r" % self.stderr_text()
            kind, payload = frame
            if kind == STDOUT:
                stdout += payload
            elif kind == STDERR:
                stderr += payload
            else:
                msg = json.loads(payload)
                if msg["t"] == "call":
                    calls.append(msg)
                    assert answer is not None, "unexpected call %r" % msg
                    self.send({"t": "call_result", "call": msg["call"], **answer(msg)})
                elif msg["t"] == "output_limit" and on_limit is not None:
                    on_limit(msg)
                elif msg["t"] == "done":
                    assert msg["cell"] == cell, msg
                    return Cell(msg, bytes(stdout), bytes(stderr), calls)
                else:
                    raise AssertionError("unexpected message during cell %d: %r" % (cell, msg))

    def exec(self, code: str, answer: Optional[Answerer] = echo, timeout: float = 20.0, **fields: Any) -> Cell:
        return self.finish(self.start_exec(code, **fields), answer, timeout)

    def request(self, t: str, **fields: Any) -> Message:
        req = self.next_req
        self.next_req += 1
        self.send({"t": t, "req": req, **fields})
        reply = self.msg()
        assert reply["t"] == "reply" and reply["req"] == req, reply
        return reply

    # -- ending

    def close(self, timeout: float = 10.0) -> int:
        """Closes the agent's stdin; its exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def stderr_text(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def in_user_code(mark: str) -> str:
    """Cell code that creates the file `mark` (the test then knows the cell
    runs user code: output reaches the host only at the cell's end)."""
    return "open(%r, 'w').close()\n" % mark


def wait_mark(mark: str, timeout: float = 10.0) -> None:
    """Waits until the cell has run in_user_code(mark)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(mark):
        assert time.monotonic() < deadline, "the cell did not start"
        time.sleep(0.005)
