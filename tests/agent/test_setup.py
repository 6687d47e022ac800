"""`exec`'s `setup` (docs/PROTOCOL.md, "Agent frames"): code run on its
own before the cell's code, in the same cell, so a client's preparation
and its step are one cell (under gVisor each cell's fixed cost is tens of
system calls)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from frames import Agent, in_user_code, wait_mark


def test_a_setup_runs_before_the_code_in_the_same_cell(ready: Agent) -> None:
    cell = ready.exec("print('code', x)\nx + 1", setup="x = 41\nprint('setup')")
    assert (cell.status, cell.out, cell.done["setup"]) == ("ok", "setup\ncode 41\n", "ok")
    # The code's trailing value is the cell's; the setup's is not reported.
    assert cell.done["value"]["repr"] == "42"
    assert ready.exec("x", setup="'setup value'").done["value"]["repr"] == "41"
    # A cell without a setup says nothing of one.
    assert "setup" not in ready.exec("print(x)").done


def test_a_failed_setup_ends_the_cell_before_the_code(ready: Agent) -> None:
    cell = ready.exec("ran = True", setup="before = 1\nraise ValueError('no setup')")
    assert (cell.status, cell.done["setup"]) == ("error", "error")
    assert "ValueError: no setup" in cell.err and "<cell 1 setup>" in cell.err, cell.err
    # What the setup bound before it failed stays (as a cell's bindings do); the code never ran.
    assert ready.exec("print(before, 'ran' in globals())").out == "1 False\n"
    # A setup that does not compile: the same.
    cell = ready.exec("ran = True", setup="def (")
    assert (cell.status, cell.done["setup"]) == ("error", "error") and "SyntaxError" in cell.err
    assert ready.exec("print('ran' in globals())").out == "False\n"


def test_a_code_error_after_an_ok_setup_is_the_codes(ready: Agent) -> None:
    cell = ready.exec("1 / 0", setup="y = 2")
    assert (cell.status, cell.done["setup"]) == ("error", "ok")
    assert "ZeroDivisionError" in cell.err and "<cell 1>" in cell.err and "setup>" not in cell.err


def test_keep_keeps_what_the_setup_bound_not_what_the_code_rebound(ready: Agent) -> None:
    """A step's preparation binds its inputs; the code may rebind them; the
    next step restores the inputs as the preparation bound them."""
    cell = ready.exec("q = 'rebound'\nprint(q)", setup="q = 'input'", keep=["q"])
    assert (cell.status, cell.out) == ("ok", "rebound\n")
    assert ready.exec("print(q)", restore=["q"]).out == "input\n"
    # A failed setup keeps nothing.
    assert ready.exec("pass", setup="q = 'half'\n1/0", keep=["q"]).status == "error"
    assert ready.exec("print(q)", restore=["q"]).out == "input\n"
    # Without a setup, keep still follows the code (as before).
    assert ready.exec("q = 'after code'", keep=["q"]).status == "ok"
    assert ready.exec("print(q)", restore=["q"]).out == "after code\n"


def test_restore_comes_before_the_setup(ready: Agent) -> None:
    assert ready.exec("v = 'kept'", keep=["v"]).status == "ok"
    cell = ready.exec("print(w)", restore=["v"], setup="w = v.upper()")
    assert (cell.status, cell.out) == ("ok", "KEPT\n")
    # A restore that fails runs neither; the done has no setup status.
    cell = ready.exec("ran = 1", restore=["never"], setup="ran_setup = 1")
    assert cell.status == "error" and "setup" not in cell.done
    assert ready.exec("print('ran' in globals(), 'ran_setup' in globals())").out == "False False\n"


def test_an_rlms_cell_keeps_the_setups_bindings_when_its_code_fails(ready: Agent) -> None:
    cell = ready.exec("z = 1\n1 / 0", setup="s = 'setup'", namespace="rlms")
    assert (cell.status, cell.done["setup"]) == ("error", "ok")
    assert ready.exec("print(s, 'z' in globals())").out == "setup False\n"


def test_an_answer_set_by_the_setup_is_the_cells(ready: Agent) -> None:
    cell = ready.exec("pass", setup="answer['content'] = 'from setup'\nanswer['ready'] = True")
    assert cell.done["final_answer"] == "from setup"


def test_an_interrupt_stops_a_setup_and_the_code_does_not_run(ready: Agent, tmp_path: Path) -> None:
    mark = str(tmp_path / "started")
    cell = ready.start_exec("ran = True", setup="import time\n" + in_user_code(mark) + "time.sleep(30)")
    wait_mark(mark)
    started = time.monotonic()
    ready.send({"t": "interrupt", "cell": cell})
    result = ready.finish(cell)
    assert time.monotonic() - started < 30
    assert (result.status, result.done["setup"]) == ("interrupted", "interrupted")
    assert result.err.endswith("KeyboardInterrupt\n"), result.err
    assert ready.exec("print('ran' in globals())").out == "False\n"


@pytest.mark.parametrize("fields", [{"setup": 1}, {"setup": ["x = 1"]}, {"setup": "x = 1", "namespace": "script"}])
def test_a_bad_setup_is_an_error_of_the_cell(ready: Agent, fields: Any) -> None:
    cell = ready.exec("ran = 1", **fields)
    assert cell.status == "error" and "setup" not in cell.done
    assert ready.exec("print('ran' in globals(), 'x' in globals())").out == "False False\n"
    assert ready.close() == 0
    assert "exec's setup must be a str" in ready.stderr_text()


def test_an_interrupt_between_the_setup_and_the_code_is_not_lost() -> None:
    """The host's interrupt may arrive after the setup left user code and
    before the code entered it: the code then starts interrupted (else the
    cell would run on until the host kills the sandbox)."""
    from frames import AGENT_ROOT
    import sys

    if str(AGENT_ROOT) not in sys.path:
        sys.path.insert(0, str(AGENT_ROOT))
    from _rlm_agent.interrupts import Interrupts

    interrupts = Interrupts(main_ident=0)  # never signalled: nothing is in user code when asked
    interrupts.enter(5)  # the setup
    interrupts.leave()
    interrupts.request(5)
    interrupts.enter(5)  # the code
    assert interrupts.pending
    interrupts.leave()
    # An interrupt for a cell that has ended does not reach the next one.
    interrupts.request(5)
    interrupts.enter(6)
    assert not interrupts.pending
