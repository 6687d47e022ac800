"""The in-sandbox agent `_rlm_agent` against docs/PROTOCOL.md ("Agent
frames"), driven over its stdin/stdout as the host drives it. Run with
`python3 -m pytest tests/agent` (see frames.py for running it in a rootfs)."""

from __future__ import annotations

import importlib
import sys
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from frames import AGENT_ROOT, JSON, Agent, Message, ctx_spec, encode_msg, in_user_code, wait_mark


def load_module() -> Any:
    """The agent's frame module (its pure parts), without starting the agent."""
    if str(AGENT_ROOT) not in sys.path:
        sys.path.insert(0, str(AGENT_ROOT))
    return importlib.import_module("_rlm_agent.wire")


# --- start, state -----------------------------------------------------------------


def test_the_agent_says_standby_before_any_hello() -> None:
    """A pool's sandbox is ready when the agent says so, not when its
    process exists: `standby` comes unasked, first, and only once."""
    a = Agent()
    try:
        assert a.msg()["t"] == "standby"
        ready = a.hello()
        assert ready["t"] == "ready"
        assert a.exec("print(1)").out == "1\n"
        assert a.protocol_errors == [], a.protocol_errors
    finally:
        a.kill()


HELLO: Message = {"t": "hello", "contexts": [], "tools": [], "max_load_bytes": 64 << 20, "max_frame": 8 << 20,
                  "max_prompt_bytes": 4 << 20, "max_output_bytes": 256 << 20}


def test_a_cell_sent_behind_hello_comes_after_ready(agent: Agent) -> None:
    """A claim writes `hello` and its first `exec` at once; the agent may
    hold `ready` for the cell's first frame (one write), but `ready`
    still comes first, then the cell's output, then its `done`."""
    agent.send_raw(encode_msg(HELLO) + encode_msg({"t": "exec", "cell": 1, "code": "print('first')\n7"}))
    agent.next_cell = 2
    assert agent.msg()["t"] == "ready"
    cell = agent.finish(1)
    assert (cell.status, cell.out, cell.done.get("value", {}).get("repr")) == ("ok", "first\n", "7"), cell
    assert agent.exec("print('next')").out == "next\n"


def test_a_held_ready_goes_out_while_a_long_first_cell_runs(agent: Agent, tmp_path: Path) -> None:
    """`ready` held for the frames of a cell sent behind `hello` does not
    wait for that cell's end: the cell here blocks until the test has
    seen `ready` (it opens a FIFO the test opens only then)."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    code = "import os\nfd = os.open(%r, os.O_RDONLY)\nprint(os.read(fd, 2).decode())" % str(fifo)
    agent.send_raw(encode_msg(HELLO) + encode_msg({"t": "exec", "cell": 1, "code": code}))
    agent.next_cell = 2
    assert agent.msg(timeout=30)["t"] == "ready"
    with open(fifo, "wb") as go:
        go.write(b"go")
    cell = agent.finish(1)
    assert (cell.status, cell.out) == ("ok", "go\n"), cell


def test_hello_answers_ready_with_the_names(agent: Agent, files: Any) -> None:
    path = files(b"hello")
    ready = agent.hello(contexts=[ctx_spec(0, path)], tools=[{"name": "lookup", "params": ["key"]}])
    assert ready["python"].startswith("3.")
    for name in ("context", "context_0", "ctx", "ctxs", "llm_query", "llm_query_batched", "rlm_query",
                 "rlm_query_batched", "lookup", "answer", "FINAL", "FINAL_VAR", "SHOW_VARS"):
        assert name in ready["names"], name
    cell = agent.exec("print(context, ctx.size, len(ctxs))")
    assert (cell.status, cell.out) == ("ok", "hello 5 1\n")


def test_state_persists_across_cells(ready: Agent) -> None:
    assert ready.exec("total = 0\nseen = []").status == "ok"
    for i in range(1, 21):
        cell = ready.exec(f"total += {i}\nseen.append({i})\nprint(total)")
        assert (cell.status, cell.out) == ("ok", f"{i * (i + 1) // 2}\n")
    cell = ready.exec("import __main__\nprint(len(seen), __main__.total, __name__)")
    assert cell.out == "20 210 __main__\n"


# --- errors --------------------------------------------------------------------


def test_tracebacks_show_user_frames_only(ready: Agent) -> None:
    ready.exec("kept = 41")
    cell = ready.exec("def f():\n    raise ValueError('boom')\nf()")
    assert cell.status == "error"
    assert cell.err.startswith("Traceback (most recent call last):\n"), cell.err
    assert 'File "<cell 2>", line 2, in f' in cell.err and "raise ValueError('boom')" in cell.err
    assert cell.err.endswith("ValueError: boom\n")
    assert "agent" not in cell.err, cell.err
    # An error raised inside a sandbox function shows no agent frame either.
    cell = ready.exec("llm_query(42)")
    assert cell.status == "error" and "TypeError: llm_query() prompt must be str, not int" in cell.err
    assert "agent" not in cell.err and cell.err.count("File ") == 1, cell.err
    cell = ready.exec("syntax error here")
    assert cell.status == "error" and "SyntaxError" in cell.err and "<cell 4>" in cell.err
    cell = ready.exec("raise SystemExit(3)")
    assert cell.status == "error" and "SystemExit: 3" in cell.err
    cell = ready.exec("print(kept + 1)")
    assert (cell.status, cell.out) == ("ok", "42\n")


def test_chained_exceptions_lose_agent_frames_too(ready: Agent) -> None:
    cell = ready.exec("try:\n    ctx_missing\nexcept NameError as e:\n    raise RuntimeError('wrapped') from e")
    assert "NameError" in cell.err and "RuntimeError: wrapped" in cell.err and "agent" not in cell.err


# --- calls -----------------------------------------------------------------------


def test_llm_query_and_batches_round_trip(ready: Agent) -> None:
    cell = ready.exec("a = llm_query('hello', model='m1')\nb = llm_query_batched(['x', 'y', 'z'])\n"
                      "c = rlm_query('deep')\nd = rlm_query_batched(('p', 'q'), model='m2')\nprint(a, b, c, d)")
    assert cell.out == "re:hello ['re:x', 're:y', 're:z'] re:deep ['re:p', 're:q']\n"
    assert [c["call"] for c in cell.calls] == [1, 2, 3, 4]
    assert cell.calls[0] == {"t": "call", "call": 1, "kind": "llm_query", "model": "m1", "prompts": ["hello"]}
    assert cell.calls[1]["prompts"] == ["x", "y", "z"] and cell.calls[1]["model"] is None
    assert cell.calls[2]["kind"] == "rlm_query" and cell.calls[3]["kind"] == "rlm_query"
    assert cell.calls[3]["model"] == "m2"
    assert ready.exec("print(llm_query_batched([]))").out == "[]\n"


def test_error_results_become_error_strings(ready: Agent) -> None:
    refuse = lambda call: {"error": "no model today"}  # noqa: E731
    cell = ready.exec("print(llm_query('q'))\nprint(llm_query_batched(['a', 'b']))", answer=refuse)
    assert cell.out == "Error: no model today\n['Error: no model today', 'Error: no model today']\n"
    partial = lambda call: {"results": ["fine", "Error: refused"]}  # noqa: E731
    cell = ready.exec("print(llm_query_batched(['a', 'b']))", answer=partial)
    assert cell.out == "['fine', 'Error: refused']\n"


def test_prompts_must_be_strings(ready: Agent) -> None:
    cell = ready.exec("llm_query_batched(['a', 3])")
    assert "TypeError: llm_query_batched() prompts[1] must be str, not int" in cell.err
    cell = ready.exec("llm_query_batched('abc')")
    assert "TypeError" in cell.err and cell.calls == []
    cell = ready.exec("llm_query('a', model=3)")
    assert "TypeError: model must be str or None" in cell.err


def test_calls_from_threads_are_in_flight_at_once(ready: Agent) -> None:
    cell = ready.start_exec(
        "import threading\nout = {}\n"
        "def ask(i):\n    out[i] = llm_query(f'p{i}')\n"
        "ts = [threading.Thread(target=ask, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in ts]\n[t.join() for t in ts]\nprint(sorted(out.items()))"
    )
    calls = [ready.msg() for _ in range(8)]
    assert all(c["t"] == "call" for c in calls)
    assert sorted(c["call"] for c in calls) == list(range(1, 9))
    for call in reversed(calls):
        ready.send({"t": "call_result", "call": call["call"], "results": ["a:" + call["prompts"][0]]})
    result = ready.finish(cell)
    assert result.out == "[%s]\n" % ", ".join("(%d, 'a:p%d')" % (i, i) for i in range(8))


def test_a_batch_is_split_only_when_one_frame_would_be_too_big(agent: Agent) -> None:
    agent.hello(max_frame=4096, max_prompt_bytes=3000)
    cell = agent.exec("r = llm_query_batched(['%02d' % i + 'x' * 998 for i in range(10)])\n"
                      "print([a[:5] for a in r])\nprint(llm_query('y' * 5000)[:40])")
    assert cell.out == "[%s]\n" % ", ".join("'re:%02d'" % i for i in range(10)) + \
        "Error: prompt of 5000 bytes is above the\n"
    assert len(cell.calls) > 1
    for call in cell.calls:
        assert len(json.dumps(call, separators=(",", ":"))) + 1 <= 4096
    assert [p[:2] for c in cell.calls for p in c["prompts"]] == ["%02d" % i for i in range(10)]
    cell = agent.exec("print(llm_query_batched(['a', 'b']))")
    assert len(cell.calls) == 1


def test_tools_take_positional_and_keyword_arguments(agent: Agent) -> None:
    agent.hello(tools=[{"name": "lookup", "params": ["key", "limit"]}, {"name": "bad name", "params": []}])
    cell = agent.exec("print(lookup('k1', 2))\nprint(lookup(limit=3, key='k2'))")
    assert cell.out == ("{'tool': 'lookup', 'args': {'key': 'k1', 'limit': 2}}\n"
                        "{'tool': 'lookup', 'args': {'key': 'k2', 'limit': 3}}\n")
    assert cell.calls[0] == {"t": "call", "call": 1, "kind": "tool", "model": None, "name": "lookup",
                             "args": {"key": "k1", "limit": 2}}
    cell = agent.exec("lookup('only one')")
    assert "TypeError: lookup() missing 1 required positional argument: 'limit'" in cell.err
    cell = agent.exec("lookup(object(), 1)")
    assert "TypeError: lookup(): arguments must be JSON values" in cell.err and cell.calls == []
    cell = agent.exec("print(lookup('k', 1))", answer=lambda c: {"error": "tool broke"})
    assert cell.out == "Error: tool broke\n"
    assert agent.exec("print('bad name' in globals())").out == "False\n"


# --- answers and names ---------------------------------------------------------------


def test_final_answers_from_answer_ready_final_and_final_var(ready: Agent) -> None:
    cell = ready.exec("answer['content'] = 'forty-two'\nanswer['ready'] = True")
    assert cell.done["final_answer"] == "forty-two"
    cell = ready.exec("print(answer)")
    assert cell.done["final_answer"] is None
    assert cell.out == "{'content': '', 'ready': False}\n"
    cell = ready.exec("result = {'a': 1}\nprint(FINAL_VAR('result'))")
    assert cell.done["final_answer"] == "{'a': 1}" and cell.out == "{'a': 1}\n"
    cell = ready.exec("FINAL_VAR(' \"result\" ')")
    assert cell.done["final_answer"] == "{'a': 1}"
    cell = ready.exec("print(FINAL_VAR('missing'))")
    assert cell.done["final_answer"] is None
    assert cell.out.startswith("Error: Variable 'missing' not found. Available variables: ['result']")
    cell = ready.exec("FINAL(42)")
    assert cell.done["final_answer"] == "42"
    cell = ready.exec("answer = {'content': 7, 'ready': True}")
    assert cell.done["final_answer"] == "7"
    cell = ready.exec("print(type(answer).__name__, answer['ready'])")
    assert cell.out == "dict False\n" and cell.done["final_answer"] is None
    # An error after the answer was set still reports it.
    cell = ready.exec("answer['content'] = 'partial'\nanswer['ready'] = True\n1/0")
    assert cell.status == "error" and cell.done["final_answer"] == "partial"


def test_show_vars_lists_user_variables(ready: Agent) -> None:
    assert ready.exec("print(SHOW_VARS())").out == \
        "No variables created yet. Use ```repl``` blocks to create variables.\n"
    cell = ready.exec("x = 1\nname = 'n'\n_hidden = 2\nprint(SHOW_VARS())")
    assert cell.out == "Available variables: {'x': 'int', 'name': 'str'}\n"


def test_an_rlms_cell_keeps_only_what_local_repl_keeps(ready: Agent) -> None:
    rlms = {"namespace": "rlms"}
    assert ready.exec("_keep = 1\nlst = []\nx = 3").status == "ok"
    # An ok cell: its bindings of "_" names are undone, the others kept.
    cell = ready.exec("_tmp = 2\n_keep = 5\ndel __name__\ny = 4\nprint(_tmp, _keep)", **rlms)
    assert (cell.status, cell.out) == ("ok", "2 5\n")
    assert ready.exec("print('_tmp' in globals(), _keep, __name__, y)").out == "False 1 __main__ 4\n"
    # A cell that raised: none of its bindings, but objects it changed stay changed.
    cell = ready.exec("z = 1\nx = 99\ndel y\nlst.append(1)\nraise ValueError('no')", **rlms)
    assert cell.status == "error" and "ValueError: no" in cell.err
    assert ready.exec("print('z' in globals(), x, y, lst)").out == "False 3 4 [1]\n"
    # An answer set in place before the error still ends the task; a rebound one does not.
    cell = ready.exec("answer['content'] = 'partial'\nanswer['ready'] = True\n1/0", **rlms)
    assert (cell.status, cell.done["final_answer"]) == ("error", "partial")
    cell = ready.exec("answer = {'content': 'lost', 'ready': True}\n1/0", **rlms)
    assert (cell.status, cell.done["final_answer"]) == ("error", None)
    # The default keeps everything, as before.
    assert ready.exec("_s = 1\nw = 2\n1/0").status == "error"
    assert ready.exec("print(_s, w)").out == "1 2\n"


def test_an_rlms_cell_shows_the_contexts_in_show_vars(agent: Agent, files: Any) -> None:
    agent.hello(contexts=[ctx_spec(0, files(b"text"))])
    assert agent.exec("x = 1\nprint(SHOW_VARS())").out == "Available variables: {'x': 'int'}\n"
    cell = agent.exec("print(SHOW_VARS())", namespace="rlms")
    assert cell.out == "Available variables: {'context_0': 'str', 'context': 'str', 'x': 'int'}\n"


def test_kept_names_are_restored_before_a_cell(ready: Agent) -> None:
    # A preparation binds the inputs and keeps them (only when it ends ok).
    assert ready.exec("q = 'question'\nlst = []\nw = 0", keep=["q", "lst", "gone"]).status == "ok"
    assert ready.exec("q = 'lost'\n1/0", keep=["q"]).status == "error"
    # A step rebinds them; the next one sees them restored, in-place changes kept.
    cell = ready.exec("print(q)\nq = 'mine'\nlst.append(1)\nw = 1", restore=["q", "lst"])
    assert (cell.status, cell.out) == ("ok", "question\n")
    assert ready.exec("print(q, lst, w)", restore=["q"]).out == "question [1] 1\n"
    assert ready.exec("print(q)").out == "question\n"
    # A name never kept (or forgotten: kept while unbound) is an error
    # before the code runs; reset forgets them all.
    for names in (["gone"], ["never"], ["q", "never"]):
        cell = ready.exec("ran = 1", restore=names)
        assert cell.status == "error" and "which no earlier cell kept" in cell.err, cell
        assert ready.exec("print('ran' in globals())").out == "False\n"
    assert ready.request("reset")["ok"] is True
    assert ready.exec("print(1)", restore=["q"]).status == "error"


@pytest.mark.parametrize("bad", ["q", [1], ["not a name"], {"q": 1}])
def test_keep_and_restore_must_name_identifiers(ready: Agent, bad: Any) -> None:
    assert ready.exec("x = 1", keep=["x"]).status == "ok"
    for field in ("keep", "restore"):
        cell = ready.exec("y = 1", **{field: bad})
        assert cell.status == "error"
        assert ready.exec("print('y' in globals())").out == "False\n"
    assert ready.close() == 0
    diagnostics = ready.stderr_text()
    assert "exec's keep must be a list of identifiers" in diagnostics
    assert "exec's restore must be a list of identifiers" in diagnostics


@pytest.mark.parametrize("bad", ["local", True, None, 1])
def test_an_unknown_namespace_is_refused(ready: Agent, bad: Any) -> None:
    cell = ready.exec("x = 1", namespace=bad)
    assert cell.status == "error"
    assert ready.exec("print('x' in globals())").out == "False\n"
    assert ready.close() == 0
    assert "exec's namespace must be" in ready.stderr_text()


def test_sandbox_names_come_back_after_rebinding_or_deleting(ready: Agent, files: Any) -> None:
    ready.exec("answer = 3\nllm_query = None\ndel FINAL_VAR\nctxs = []\nSHOW_VARS = print")
    cell = ready.exec("print(type(answer).__name__, callable(llm_query), callable(FINAL_VAR), "
                      "type(ctxs).__name__, SHOW_VARS is print)")
    assert cell.out == "dict True True tuple False\n"


# --- requests ----------------------------------------------------------------------


def test_vars_get_and_reset(ready: Agent) -> None:
    ready.exec("numbers = list(range(10))\nname = 'x' * 100000\n_private = 1\nimport json")
    reply = ready.request("vars")
    assert reply["ok"] is True
    found = {v["name"]: v for v in reply["vars"]}
    assert found["numbers"] == {"name": "numbers", "type": "list", "size": 10}
    assert found["name"]["size"] == 100000 and found["json"]["size"] is None
    assert "_private" not in found and "llm_query" not in found and "answer" not in found
    reply = ready.request("get", name="numbers", max_bytes=1000)
    assert (reply["ok"], reply["type"], reply["repr"], reply["truncated"]) == \
        (True, "list", "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", False)
    reply = ready.request("get", name="name", max_bytes=65536)
    assert reply["truncated"] is True and len(reply["repr"].encode()) == 65536
    assert reply["repr"].startswith("'xxx")
    ready.exec("wide = '\u00e9' * 10")
    reply = ready.request("get", name="wide", max_bytes=6)
    assert reply["repr"] == "'\u00e9\u00e9" and reply["truncated"] is True
    reply = ready.request("get", name="missing", max_bytes=10)
    assert reply["ok"] is False and "missing" in reply["error"]
    assert ready.request("reset")["ok"] is True
    cell = ready.exec("print('numbers' in globals(), callable(llm_query), answer)")
    assert cell.out == "False True {'content': '', 'ready': False}\n"


def test_add_context_defines_the_next_name(ready: Agent, files: Any) -> None:
    first = files(b'{"items": [1, 2, 3]}')
    reply = ready.request("add_context", context=ctx_spec(0, first, "json"))
    assert (reply["ok"], reply["name"], reply["loaded"]) == (True, "context_0", True)
    second = files(b"second context\n")
    reply = ready.request("add_context", context=ctx_spec(1, second))
    assert (reply["name"], reply["loaded"]) == ("context_1", True)
    cell = ready.exec("print(context['items'], context_0 is context, repr(context_1), ctxs[1].size, len(ctxs))")
    assert cell.out == "[1, 2, 3] True 'second context\\n' 15 2\n"
    reply = ready.request("add_context", context={"index": 2, "path": "/nonexistent/file", "format": "text", "size": 1})
    assert reply["ok"] is False and "/nonexistent/file" in reply["error"]
    broken = files(b"{not json")
    reply = ready.request("add_context", context=ctx_spec(2, broken, "json"))
    assert reply["ok"] is False and "not valid JSON" in reply["error"]
    reply = ready.request("add_context", context=ctx_spec(2, broken, "text"))
    assert reply["ok"] is True
    assert ready.exec("print(context_2)").out == "{not json\n"
    ready.request("reset")
    assert ready.exec("print(len(ctxs), context_2)").out == "3 {not json\n"


# --- the channel ---------------------------------------------------------------------


def test_end_of_input_exits_zero_even_during_a_cell(ready: Agent, tmp_path: Path) -> None:
    assert ready.exec("x = 1").status == "ok"
    assert ready.close() == 0
    other = Agent()
    try:
        other.standby()
        other.hello()
        mark = str(tmp_path / "sleeping")
        other.start_exec(in_user_code(mark) + "import time\ntime.sleep(30)")
        wait_mark(mark)
        assert other.close() == 0
    finally:
        other.kill()


def test_a_host_frame_above_64_mib_ends_the_agent_with_a_reason(ready: Agent) -> None:
    ready.send_raw(struct.pack(">I", (64 << 20) + 1))
    assert ready.proc.wait(10) != 0
    assert "64" in ready.stderr_text() or "limit" in ready.stderr_text()


def test_user_code_cannot_reach_the_channel_through_fds_0_and_1(ready: Agent) -> None:
    cell = ready.exec("import os, sys\nprint(repr(sys.stdin.read()))\nprint(os.read(0, 10))\n"
                      "print(len([n for n in os.listdir('/proc/self/fd') if 2 < int(n) < 100]) <= 1)")
    assert cell.out == "''\nb''\nTrue\n"


# --- the module's pure parts -----------------------------------------------------------


def test_frames_encode_and_decode() -> None:
    agent = load_module()
    data = agent.encode_frame(agent.JSON, b'{"t":"x"}') + agent.encode_frame(agent.STDOUT, b"")
    stream = io.BytesIO(data)
    assert agent.read_frame(stream) == (0x4A, b'{"t":"x"}')
    assert agent.read_frame(stream) == (0x31, b"")
    assert agent.read_frame(stream) is None
    with pytest.raises(agent.FrameError):
        agent.read_frame(io.BytesIO(struct.pack(">I", 11) + b"x" * 11), max_len=10)
    with pytest.raises(agent.FrameError):
        agent.read_frame(io.BytesIO(b"\0\0\0\0"))
    with pytest.raises(EOFError):
        agent.read_frame(io.BytesIO(b"\0\0\0\x05J"))
    assert agent.encode_json({"s": "a\udcff"}) == b'{"s":"a?"}'
    with pytest.raises(ValueError):
        agent.encode_json({"n": float("nan")})


def test_the_frame_reader_takes_frames_in_any_pieces_and_refuses_hostile_lengths() -> None:
    agent = load_module()
    data = agent.encode_frame(agent.JSON, b'{"t":"x"}') + agent.encode_frame(agent.STDOUT, b"")
    r, w = os.pipe()
    try:
        reader = agent.FrameReader(r)
        frames = []
        for byte in data:  # one byte per read: every split of a frame
            os.write(w, bytes([byte]))
            reader.fill()
            frame = reader.next()
            if frame is not None:
                frames.append(frame)
        assert frames == [(0x4A, b'{"t":"x"}'), (0x31, b"")]
        os.write(w, struct.pack(">I", 11))
        short = agent.FrameReader(r, max_len=10)
        short.fill()
        with pytest.raises(agent.FrameError):  # refused before any of its body arrived
            short.next()
        os.write(w, b"\0\0\0\x05J")
        os.close(w)
        w = -1
        with pytest.raises(EOFError):
            reader.read()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_quick_cells_never_wake_the_reader_thread_and_a_call_does(ready: Agent) -> None:
    """The main thread reads the host's frames itself between cells: the
    reader thread (a thread hand-off per frame, dear under gVisor) sleeps
    through cells that make no call, and reads a call's result."""
    ready.exec("import sys as _s\n"
               "_reader = _s.modules['_rlm_agent.sync'].threads['rlm-reader']\n"
               "def _switches():\n"
               "    with open('/proc/self/task/%d/status' % _reader) as f:\n"
               "        return sum(int(l.split()[1]) for l in f if 'ctxt_switches' in l)\n"
               "_before = _switches()")
    for _ in range(30):
        assert ready.exec("x = 6 * 7").status == "ok"
    # Without the hand-over every frame wakes it (over one switch per
    # cell); now only a watchdog tick that lands inside a cell may (a few).
    assert int(ready.exec("print(_switches() - _before)").out) < 10
    cell = ready.exec("print(llm_query('hi'))\nprint(_switches() - _before > 0)")
    assert cell.out.splitlines()[-1] == "True"


def test_a_broken_context_in_hello_still_starts_the_session(agent: Agent, files: Any) -> None:
    broken = files(b"{not json")
    agent.hello(contexts=[ctx_spec(0, broken, "json")])
    cell = agent.exec("print('could not be loaded' in context, ctx.read(0, 4))")
    assert cell.out == "True {not\n"


def test_a_failing_repr_is_an_error_reply(ready: Agent) -> None:
    ready.exec("class Bad:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nbad = Bad()")
    reply = ready.request("get", name="bad", max_bytes=100)
    assert reply["ok"] is False and "no repr" in reply["error"]
    assert ready.request("vars")["vars"] == [{"name": "Bad", "type": "type", "size": None},
                                             {"name": "bad", "type": "Bad", "size": None}]
