"""What a session's sandbox hands the client besides its output passes
the egress filter too: the final answer, `get`'s repr and the arguments a
tool callable of the host receives (docs/PROTOCOL.md)."""

from __future__ import annotations

from typing import Any, List

from rlm_sandbox import Session

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
