"""A cell's trailing expression: its value travels in `done` (docs/PROTOCOL.md,
"Agent frames"), as DSPy's LocalInterpreter and notebooks report it, and
nothing is printed for it (rlms's REPL semantics)."""

from __future__ import annotations

from typing import Any

from frames import Agent


def value(cell: Any) -> Any:
    return cell.done.get("value")


def test_a_trailing_expression_s_value_is_in_done_and_not_printed(ready: Agent) -> None:
    cell = ready.exec("x = 40\nx + 2")
    assert (cell.status, cell.out, cell.err) == ("ok", "", "")
    assert value(cell) == {"repr": "42", "truncated": False, "json": 42}
    # Statements run first, the expression once, after them: its side effects happen once.
    cell = ready.exec("seen = []\nseen.append(1)\nseen.append(2) or seen")
    assert value(cell)["json"] == [1, 2]
    assert ready.exec("print(seen)").out == "[1, 2]\n"


def test_no_value_for_none_a_statement_or_a_failure(ready: Agent) -> None:
    for code in ("y = 1", "print('hi')", "None", "", "# only a comment", "def f():\n    return 1"):
        cell = ready.exec(code)
        assert cell.status == "ok" and "value" not in cell.done, (code, cell.done)
    cell = ready.exec("z = 1\n1 / 0")
    assert cell.status == "error" and "value" not in cell.done
    assert "ZeroDivisionError" in cell.err and 'line 2' in cell.err
    # The statements before the failing expression ran.
    assert ready.exec("z").done["value"]["json"] == 1


def test_json_form_as_dspy_tests_it_with_the_repr_beside(ready: Agent) -> None:
    cases = {
        "{'a': (1, 2), 3: [True, None, 1.5]}": {"a": [1, 2], "3": [True, None, 1.5]},
        "'text'": "text",
        "2 ** 63": 2 ** 63,
        "-(2 ** 63)": -(2 ** 63),
    }
    for code, expected in cases.items():
        got = value(ready.exec(code))
        assert got["json"] == expected, code
        assert got["repr"] == repr(eval(code)), code
    # No JSON form: the repr alone (NaN, a set, an object, an int past 64 bits, too deep).
    for code in ("float('nan')", "{1, 2}", "object()", "2 ** 64", "eval('[' * 100 + ']' * 100)"):
        got = value(ready.exec(code))
        assert got["json"] is None and got["repr"], (code, got)
    assert value(ready.exec("class P:\n    def __repr__(self):\n        return 'P!'\nP()")) == {
        "repr": "P!", "truncated": False, "json": None}


def test_user_code_in_the_value_cannot_fail_the_cell(ready: Agent) -> None:
    code = "class Bad:\n    def __repr__(self):\n        raise RuntimeError('no')\nBad()"
    cell = ready.exec(code)
    assert cell.status == "ok" and cell.err == ""
    assert value(cell) == {"repr": "<Bad object: its repr raised RuntimeError>", "truncated": False, "json": None}
    # A dict subclass whose items() lies is read once, then sent as plain data.
    code = ("class D(dict):\n    def items(self):\n        raise ValueError('no')\n"
            "D(a=1)")
    cell = ready.exec(code)
    assert cell.status == "ok", cell.err
    assert value(cell)["repr"] == "{'a': 1}"


def test_a_huge_value_is_bounded_not_encoded(ready: Agent) -> None:
    cell = ready.exec("big = 'x' * (64 << 20)\nbig")
    got = value(cell)
    assert got["truncated"] is True and got["json"] is None
    assert len(got["repr"].encode()) == 64 << 10
    # Builtin containers too big to repr whole get a shortened repr, as a
    # notebook shows them (rlms's REPL never asks for it: it must stay cheap).
    cell = ready.exec("rows = [{'id': i} for i in range(3_000_000)]\nrows")
    got = value(cell)
    assert got["json"] is None and got["truncated"] is True
    assert got["repr"].startswith("[{'id': 0}, {'id': 1}, ") and got["repr"].endswith("{'id': 999}, ...]")
    # A JSON form of up to 1 MiB is kept.
    cell = ready.exec("'y' * (1 << 19)")
    assert value(cell)["json"] == "y" * (1 << 19)
    cell = ready.exec("'y' * (1 << 20)")
    assert value(cell)["json"] is None and value(cell)["truncated"] is True


def test_a_value_too_big_beside_the_final_answer_loses_its_json_first(agent: Agent) -> None:
    agent.hello(max_frame=300 << 10)
    cell = agent.exec("FINAL('a' * (200 << 10))\n'b' * (100 << 10)")
    assert cell.status == "ok" and cell.done["final_answer"] == "a" * (200 << 10)
    assert value(cell)["json"] is None and value(cell)["truncated"] is True
    cell = agent.exec("FINAL('a' * (290 << 10))\n'b' * (150 << 10)")
    assert cell.status == "ok" and "value" not in cell.done


def test_syntax_errors_are_still_errors(ready: Agent) -> None:
    for code in ("if", "x = (", "1 +"):
        cell = ready.exec(code)
        assert cell.status == "error" and "SyntaxError" in cell.err and "value" not in cell.done, code
