"""`Cell.value`, the value of a cell's trailing expression, on both
runtimes: typed on the client, filtered like output, and never printed,
so rlms's environment keeps LocalREPL's semantics."""

from __future__ import annotations

from rlm.environments.local_repl import LocalREPL

from rlm_sandbox import CellValue, Session
from rlm_sandbox.rlms import RlmSandboxREPL


def test_the_value_arrives_typed_beside_the_output(settings: dict) -> None:
    with Session(**settings) as s:
        cell = s.exec("rows = [{'n': 1}, {'n': 2}]\nprint('side')\n{'total': sum(r['n'] for r in rows), 'pair': (1, 2)}")
        assert cell.ok and cell.stdout == "side\n"
        assert cell.value == CellValue(repr="{'total': 3, 'pair': (1, 2)}", truncated=False, json={"total": 3, "pair": [1, 2]})
        assert cell.value.has_json
        # No JSON form: the repr alone.
        cell = s.exec("{1, 2}")
        assert cell.value == CellValue(repr="{1, 2}", truncated=False, json=None) and not cell.value.has_json
        for code in ("x = 1", "print(1)", "None", "1 / 0"):
            assert s.exec(code).value is None, code


def test_a_secret_in_the_value_never_reaches_the_client(settings: dict) -> None:
    with Session(**settings) as s:
        cell = s.exec("k = 'AKIAIOSF' + 'ODNN7EXAMPLE'\n[k]")
        assert cell.ok and cell.value is not None
        assert cell.value.json == ["[REDACTED:aws_access_key_id]"]  # still JSON, as printed output is redacted
        assert "AKIAIOSFODNN7EXAMPLE" not in cell.value.repr and "[REDACTED:aws_access_key_id]" in cell.value.repr
        assert [(f["stream"], f["kind"]) for f in cell.findings] == [("value", "aws_access_key_id")]


def test_rlms_repl_prints_nothing_for_a_trailing_expression_as_local_repl(settings: dict) -> None:
    codes = ["x = 40", "x + 2", "print(x)\nx * 2", "'text'"]
    local = LocalREPL()
    ours = RlmSandboxREPL(**settings)
    try:
        for code in codes:
            expected, got = local.execute_code(code), ours.execute_code(code)
            assert (got.stdout, got.stderr) == (expected.stdout, expected.stderr), code
    finally:
        local.cleanup()
        ours.cleanup()
