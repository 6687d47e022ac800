"""rlm-sandbox's agent: the sandbox's process in a session.

Installed byte-compiled into the rootfs's stdlib as the package
`_rlm_agent` and run as `python3 -I -B -m _rlm_agent` (or, without runpy's
imports, `-c 'import _rlm_agent.__main__ as agent; agent.main()'`). It speaks the frame
protocol of docs/PROTOCOL.md ("Agent frames") with the host over the
sandbox's stdin and stdout, runs cells of user code in one persistent namespace, sends
what cells write to fd 1 and fd 2 as output frames, and turns the user's
`llm_query`/`rlm_query`/tool calls into call frames.

It is cooperative, not trusted: user code runs in this interpreter and can
reach everything here, so nothing in this package is a security boundary (the
host parses every frame strictly and enforces every limit itself). What it
must do is keep the protocol intact for code that does not attack it: whole
frames under one lock, a cell's output before its `done`, interrupts that
land in user code and never in the agent's own frame handling.

Standard library only, and none of subprocess, multiprocessing or ctypes:
they are blocked in the sandbox.
"""

# What the rootfs self-check exercises in process.
from .contexts import ContextFile
from .namespace import format_user_exception, make_tool
from .wire import JSON, encode_frame, encode_json, read_frame

__all__ = ["JSON", "ContextFile", "encode_frame", "encode_json", "format_user_exception", "make_tool", "read_frame"]
