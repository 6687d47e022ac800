"""Interrupts of a running cell (docs/PROTOCOL.md, "interrupt"): what they
stop, what they keep, and that they never break the frame protocol. Driven
over the agent's stdin/stdout as the host drives it (frames.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from frames import JSON, Agent, echo, encode_msg, in_user_code, wait_mark


def test_interrupt_stops_a_sleep_and_keeps_the_state(ready: Agent, tmp_path: Path) -> None:
    ready.exec("before = 'kept'")
    mark = str(tmp_path / "started")
    cell = ready.start_exec("import time\nprint('started')\n" + in_user_code(mark) + "time.sleep(30)\nprint('not reached')")
    wait_mark(mark)
    started = time.monotonic()
    ready.send({"t": "interrupt", "cell": cell})
    result = ready.finish(cell)
    # Before the 30 s sleep ends (a bound no loaded machine reaches).
    assert time.monotonic() - started < 30
    assert result.status == "interrupted"
    # Usually inside the sleep; the print may not have returned yet.
    assert result.err.endswith("KeyboardInterrupt\n") and "<cell 2>" in result.err, result.err
    assert "not reached" not in result.out
    assert ready.exec("print(before)").out == "kept\n"


def test_output_buffered_before_an_interrupt_is_kept(ready: Agent, tmp_path: Path) -> None:
    mark = str(tmp_path / "go")
    cell = ready.start_exec("print('buffered')\nimport sys, time\nsys.stderr.write('go\\n')\n" + in_user_code(mark) + "time.sleep(30)")
    wait_mark(mark)
    ready.send({"t": "interrupt", "cell": cell})
    result = ready.finish(cell)
    assert (result.status, result.out) == ("interrupted", "buffered\n")


def test_interrupt_stops_a_busy_loop_and_a_waiting_call(ready: Agent, tmp_path: Path) -> None:
    mark = str(tmp_path / "go")
    cell = ready.start_exec(in_user_code(mark) + "while True:\n    pass")
    wait_mark(mark)
    ready.send({"t": "interrupt", "cell": cell})
    assert ready.finish(cell).status == "interrupted"
    # Interrupted while waiting for a call's answer, which then comes late.
    cell = ready.start_exec("print(llm_query('never answered'))")
    call = ready.msg()
    assert call["t"] == "call"
    ready.send({"t": "interrupt", "cell": cell})
    result = ready.finish(cell, answer=None)
    assert result.status == "interrupted" and "KeyboardInterrupt" in result.err
    ready.send({"t": "call_result", "call": call["call"], "results": ["late"]})
    cell2 = ready.exec("print(llm_query('next'))")
    assert cell2.out == "re:next\n"
    assert cell2.calls[0]["call"] == call["call"] + 1


def test_an_interrupt_after_the_cell_ended_is_harmless(ready: Agent) -> None:
    cell = ready.start_exec("x = 1")
    ready.finish(cell)
    ready.send({"t": "interrupt", "cell": cell})
    ready.send({"t": "interrupt", "cell": cell})
    time.sleep(0.3)
    result = ready.exec("import time\ntime.sleep(0.5)\nprint('fine', x)")
    assert (result.status, result.out, result.err) == ("ok", "fine 1\n", "")


def test_an_interrupt_before_the_cell_starts_still_interrupts_it(ready: Agent) -> None:
    # The interrupt is read before the main thread has started the cell.
    ready.send_raw(encode_msg({"t": "exec", "cell": 1, "code": "import time\ntime.sleep(20)"})
                   + encode_msg({"t": "interrupt", "cell": 1}))
    ready.next_cell = 2
    started = time.monotonic()
    result = ready.finish(1)
    # Before the 20 s sleep ends.
    assert result.status == "interrupted" and time.monotonic() - started < 20


def test_interrupts_never_break_the_protocol_while_calls_fly(ready: Agent) -> None:
    for round_ in range(5):
        # Output and call frames are not ordered with each other.
        cell = ready.start_exec("print('loop')\nn = 0\nwhile True:\n    llm_query_batched(['a', 'b'])\n    n += 1")
        interrupted, calls = False, 0
        deadline = time.monotonic() + 20
        while True:
            frame = ready.frame(max(deadline - time.monotonic(), 0.01))
            assert frame is not None
            if frame[0] != JSON:
                continue
            msg = json.loads(frame[1])
            if msg["t"] == "call":
                ready.send({"t": "call_result", "call": msg["call"], **echo(msg)})
                calls += 1
                if not interrupted and calls == 3 + round_:
                    ready.send({"t": "interrupt", "cell": cell})
                    interrupted = True
            else:
                assert msg == {"t": "done", "cell": cell, "status": "interrupted", "final_answer": None}, msg
                break
        assert ready.exec("print(n > 0)").out == "True\n"
