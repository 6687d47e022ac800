"""DSPy's RLM on SandboxInterpreter, on both runtimes: DSPy's own test LM
writes the code, the sub-LM is the real litellm client pointed at the
scripted server; and the CodeInterpreter contract piece by piece."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspy.utils.dummies import DummyLM

from rlm_sandbox.dspy import INLINE_BYTES, SandboxInterpreter

from conftest import assert_clean
from scripted_llm import ScriptedLLM, user_text


def test_an_rlm_program_reaches_submit_with_typed_outputs(settings: dict) -> None:
    steps = [
        {"reasoning": "Count the words, ask the sub-LM.",
         "code": "words = text.split()\nlabel = llm_query('Label: ' + words[0])\nprint(len(words), label)"},
        {"reasoning": "Done.", "code": "SUBMIT(label=label, count=len(words))"},
    ]
    interpreters = []

    def factory() -> SandboxInterpreter:
        interpreters.append(SandboxInterpreter(**settings))
        return interpreters[-1]

    with ScriptedLLM({"sub": lambda messages: "LABEL(" + user_text(messages) + ")"}) as llm:
        sub_lm = dspy.LM("openai/sub", api_base=llm.base_url, api_key="unused", cache=False)
        rlm = dspy.RLM("text -> label: str, count: int", max_iters=4, sub_lm=sub_lm, interpreter_factory=factory)
        with dspy.context(lm=DummyLM(steps)):
            result = rlm(text="alpha beta gamma")
        assert llm.models() == ["sub"]
    assert (result.label, result.count) == ("LABEL(Label: alpha)", 3)
    assert isinstance(result.count, int)
    assert "3 LABEL(Label: alpha)" in result.trajectory[0]["output"]
    # RLM shut the interpreter down: its sandbox is gone.
    assert len(interpreters) == 1 and interpreters[0].session is None


def test_the_interpreter_contract(settings: dict, state_dir: Path) -> None:
    tools: dict = {}
    interp = SandboxInterpreter(tools=tools, **settings)
    # DSPy fills the dict after construction: the live one is read.
    tools["llm_query"] = lambda prompt: "sub:" + prompt
    tools["lookup"] = lambda key: {"a": 1}.get(key)
    interp.output_fields = [{"name": "answer", "type": "str"}, {"name": "n", "type": "int"}]
    assert interp.tools is tools
    assert interp.execute("x = 1") is None  # before start(): lazy start
    interp.start()
    interp.start()  # idempotent
    pid = interp.session.pid
    assert interp.execute("print(x, lookup(key='a'), llm_query_batched(['p', 'q']))") == "1 1 ['sub:p', 'sub:q']\n"
    out = interp.execute("SUBMIT('yes', n=2)\nprint('after')")
    assert out == FinalOutput({"answer": "yes", "n": 2})
    # An old SUBMIT never ends a later step.
    assert interp.execute("print('next')") == "next\n"
    with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
        interp.execute("1 / 0")
    with pytest.raises(SyntaxError):
        interp.execute("def (")
    with pytest.raises(CodeExecutionError, match="missing output fields"):
        interp.execute("SUBMIT('only one')")
    interp.shutdown()
    assert_clean(state_dir, pid)
    with pytest.raises(CodeInterpreterError):
        interp.execute("print(1)")


def test_inputs_are_sent_once_and_large_ones_as_files(settings: dict) -> None:
    big = "word " * (INLINE_BYTES // 4)
    with SandboxInterpreter(**settings) as interp:
        variables: dict[str, Any] = {"question": "how many?", "doc": big, "rows": [{"a": 1}]}
        assert interp.execute("print(question, len(doc), rows[0]['a'])", variables) == f"how many? {len(big)} 1\n"
        # The large one arrived as a mounted context (the only one), not as source code.
        assert interp.session.exec("print(len(ctxs), ctx.size)").stdout == f"1 {len(big)}\n"
        # The same inputs again: nothing rebound (the code's own change stays).
        interp.execute("question = 'changed'")
        assert interp.execute("print(question)", variables) == "changed\n"
        # A changed input is sent again.
        variables["question"] = "new?"
        assert interp.execute("print(question)", variables) == "new?\n"
        assert interp.session.exec("print(len(ctxs))").stdout == "1\n"


def test_a_dead_sandbox_is_a_code_interpreter_error(settings: dict) -> None:
    with SandboxInterpreter(memory="128m", **settings) as interp:
        with pytest.raises(CodeInterpreterError, match="oom"):
            interp.execute("x = bytearray(1024 * 1024 * 1024)")
        with pytest.raises(CodeInterpreterError):
            interp.execute("print(1)")
        with pytest.raises(CodeInterpreterError):
            interp.start()  # never a silent restart
