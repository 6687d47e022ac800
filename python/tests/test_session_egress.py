"""What a session's sandbox hands the client besides its output passes
the egress filter too: the final answer, `get`'s repr and the arguments a
tool callable of the host receives (docs/PROTOCOL.md)."""

from __future__ import annotations

from typing import Any, List

import pytest
from dspy.primitives.code_interpreter import CodeExecutionError

from rlm_sandbox import Cell, Session
from rlm_sandbox.dspy import _SUBMIT_MARK, _SUBMITTED_LINE, _submission

KEY = "AKIAIOSFODNN7EXAMPLE"
MAKE_KEY = "k = 'AKIAIOSF' + 'ODNN7EXAMPLE'\n"  # built in the sandbox: not in the code


def test_a_secret_in_the_final_answer_and_in_get_is_redacted(settings: dict) -> None:
    with Session(**settings) as s:
        cell = s.exec(MAKE_KEY + "_ = FINAL('key: ' + k)")
        assert cell.final_answer == "key: [REDACTED:aws_access_key_id]"
        assert [(f["stream"], f["kind"]) for f in cell.findings] == [("final_answer", "aws_access_key_id")]
        s.exec("note = 'id ' + k")
        assert s.get("note") == "'id [REDACTED:aws_access_key_id]'"


def test_a_tool_callable_receives_its_args_redacted(settings: dict) -> None:
    seen: List[Any] = []

    def lookup(key: Any) -> str:
        seen.append(key)
        return "ok"

    with Session(tools={"lookup": lookup}, **settings) as s:
        cell = s.exec(MAKE_KEY + "print(lookup({'token': k, 'n': 1}))")
    assert cell.stdout == "ok\n", cell.stderr
    assert seen == [{"token": "[REDACTED:aws_access_key_id]", "n": 1}]
    assert [(f["stream"], f["kind"]) for f in cell.calls[0]["findings"]] == [("tool_args", "aws_access_key_id")]


def test_dspy_names_the_egress_filter_when_it_broke_a_submission() -> None:
    # SUBMIT's values travel as JSON in the final answer; a context echo
    # redacted across them leaves no JSON, and the error says why.
    broken = _SUBMIT_MARK + '{"answer": "Line 1: [REDACTED:context_echo]'
    finding = {"kind": "context_echo", "stream": "final_answer", "span": [0, 1], "action": "redact"}
    cell = Cell(status="error", stderr=_SUBMITTED_LINE + "\n", final_answer=broken, findings=[finding])
    with pytest.raises(CodeExecutionError, match="egress filter redacted part of them \\(context_echo\\)"):
        _submission(cell)
    # A secret is redacted inside its JSON string: the values still read back.
    cell.final_answer, cell.findings = _SUBMIT_MARK + '{"answer": "[REDACTED:aws_access_key_id]"}', []
    assert _submission(cell) == {"answer": "[REDACTED:aws_access_key_id]"}
