"""rlms (the reference RLM library) running its loop in rlm-sandbox: the
root model and the sub-model are the library's own `openai` backend
pointed at a scripted server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest

from rlm import RLM
from rlm.core.types import REPLResult
from rlm.logger import RLMLogger

from rlm_sandbox.rlms import RlmSandboxREPL, install

from conftest import assert_clean
from scripted_llm import ScriptedLLM, user_text

FIRST_TURN = [
    "Let me look.\n```repl\nn = len(context)\nfirst = llm_query('Name the fruit in: ' + context[:30])\nprint(n, first)\n```",
    "```repl\nparts = llm_query_batched(['one', 'two'])\n"
    "answer['content'] = first + '|' + '|'.join(parts) + '|' + str(n)\nanswer['ready'] = True\n```",
]
SECOND_TURN = [
    "```repl\nprint(first, len(context_1))\n```",
    "```repl\nanswer['content'] = 'again:' + first + ':' + context_1\nanswer['ready'] = True\n```",
]


def _root(script: List[str]):
    """A root model that plays `script`, one reply per request, in order."""
    turns = iter(script)

    def reply(messages: List[Dict[str, Any]]) -> str:
        return next(turns)

    return reply


def _sub(messages: List[Dict[str, Any]]) -> str:
    return "SUB(" + user_text(messages) + ")"


def _rlm(llm: ScriptedLLM, settings: dict, **kwargs: Any) -> RLM:
    install()
    return RLM(
        backend="openai",
        backend_kwargs={"model_name": "root", "base_url": llm.base_url, "api_key": "unused"},
        other_backends=["openai"],
        other_backend_kwargs=[{"model_name": "sub", "base_url": llm.base_url, "api_key": "unused"}],
        environment="rlm-sandbox",
        environment_kwargs=dict(settings),
        max_iterations=6,
        **kwargs,
    )


def _code_results(completion: Any) -> List[dict]:
    """The REPL results of every code block of a logged completion."""
    out = []
    for iteration in completion.metadata["iterations"]:
        for block in iteration["code_blocks"]:
            out.append(block["result"])
    return out


def test_a_completion_runs_end_to_end_in_the_sandbox(settings: dict) -> None:
    script = list(FIRST_TURN)
    with ScriptedLLM({"root": _root(script), "sub": _sub}) as llm:
        rlm = _rlm(llm, settings, logger=RLMLogger())
        result = rlm.completion("The fruit is a mango, from the orchard.")
        models = llm.models()
    assert result.response == "SUB(Name the fruit in: The fruit is a mango, from the)|SUB(one)|SUB(two)|39"
    # Sub-calls went to the other backend (depth routing), the root model
    # got exactly its two turns.
    assert models.count("root") == 2 and models.count("sub") == 3, models
    blocks = _code_results(result)
    assert blocks[0]["stdout"] == "39 SUB(Name the fruit in: The fruit is a mango, from the)\n"
    assert blocks[0]["stderr"] == "" and blocks[1]["stderr"] == ""
    assert [len(b["rlm_calls"]) for b in blocks] == [1, 2]
    assert blocks[1]["rlm_calls"][0]["root_model"] == "sub"


def test_a_persistent_environment_keeps_variables_across_completions(settings: dict, state_dir: Path) -> None:
    with ScriptedLLM({"root": _root(FIRST_TURN + SECOND_TURN), "sub": _sub}) as llm:
        rlm = _rlm(llm, settings, persistent=True)
        first = rlm.completion("The fruit is a kiwi.")
        env = rlm._persistent_env
        assert isinstance(env, RlmSandboxREPL)
        # The second completion must not end at its first cell on the
        # first completion's answer.
        second = rlm.completion("second prompt")
        assert llm.models().count("root") == 4
    assert first.response.endswith("|20")
    assert second.response == "again:SUB(Name the fruit in: The fruit is a kiwi.):second prompt"
    # One context and one stored history per completion.
    assert env.get_context_count() == 2 and env.get_history_count() == 2
    pid = env.session.pid
    rlm.close()
    assert_clean(state_dir, pid)


def test_the_environment_protocol(settings: dict, state_dir: Path) -> None:
    install()
    env = RlmSandboxREPL(
        context_payload={"rows": [1, 2, 3]},
        setup_code="total = sum(context['rows'])",
        custom_tools={"double": lambda x: 2 * x, "LIMIT": 10},
        compaction=True,
        **settings,
    )
    pid = env.session.pid
    result = env.execute_code("print(total, double(LIMIT), type(history).__name__)")
    assert isinstance(result, REPLResult)
    assert (result.stdout, result.stderr) == ("6 20 list\n", "")
    assert result.locals["total"] == "<int>"
    env.append_compaction_entry({"type": "summary", "content": "s"})
    assert env.execute_code("print(history)").stdout == "[{'type': 'summary', 'content': 's'}]\n"
    error = env.execute_code("1 / 0")
    assert "ZeroDivisionError" in error.stderr and "_rlm_agent" not in error.stderr
    # No LM handler: the code gets the library's error string.
    assert env.execute_code("print(llm_query('x'))").stdout == "Error: No LM handler configured\n"
    with pytest.raises(ValueError, match="reserved"):
        RlmSandboxREPL(custom_tools={"llm_query": print}, **settings)
    env.cleanup()
    assert_clean(state_dir, pid)


def test_rlm_query_recurses_into_a_child_rlm_in_its_own_sandbox(settings: dict) -> None:
    script = [
        "```repl\nr = rlm_query('child task')\nprint(r)\n```",
        # The child RLM's only turn, in a sandbox of its own.
        "```repl\nanswer['content'] = 'child saw ' + context\nanswer['ready'] = True\n```",
        "```repl\nanswer['content'] = r\nanswer['ready'] = True\n```",
    ]
    with ScriptedLLM({"root": _root(script), "sub": _sub}) as llm:
        rlm = _rlm(llm, settings, max_depth=2, logger=RLMLogger())
        result = rlm.completion("parent prompt")
    assert result.response == "child saw child task"
    first = _code_results(result)[0]
    assert first["stdout"] == "child saw child task\n"
    assert [c["response"] for c in first["rlm_calls"]] == ["child saw child task"]
