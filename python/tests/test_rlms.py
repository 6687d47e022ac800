"""rlms (the reference RLM library) running its loop in rlm-sandbox: the
root model and the sub-model are the library's own `openai` backend
pointed at a scripted server. Then RlmSandboxREPL side by side with the
library's LocalREPL, the reference, on the same cells and calls: batch
order whatever the completion order, max_concurrent_subcalls, the
compaction history, malformed sub-call results, code-string tools (as
DockerREPL runs them), and every observable of REPLResult."""

from __future__ import annotations

import ast
import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from rlm import RLM
from rlm.clients import get_client
from rlm.core.lm_handler import LMHandler
from rlm.core.types import REPLResult, RLMChatCompletion, UsageSummary
from rlm.environments.local_repl import LocalREPL
from rlm.logger import RLMLogger
from rlm.utils.parsing import format_execution_result

from rlm_sandbox import Session
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
    # A loaded context cannot be replaced (it would silently stay the old one).
    with pytest.raises(ValueError, match="context_0 is already loaded .* adds context_1"):
        env.load_context({"rows": [4]})
    assert env.execute_code("print(context)").stdout == "{'rows': [1, 2, 3]}\n"
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


# -- side by side with rlms's LocalREPL (the reference) ----------------------


@contextlib.contextmanager
def _lm_handler(replies: Dict[str, Any]) -> Iterator[Tuple[ScriptedLLM, Tuple[str, int]]]:
    """rlms's own LM handler (its openai client, model "sub") in front of
    a scripted server."""
    with ScriptedLLM(replies) as llm:
        handler = LMHandler(get_client("openai", {"model_name": "sub", "base_url": llm.base_url, "api_key": "unused"}))
        handler.start()
        try:
            yield llm, handler.address
        finally:
            handler.stop()


def _pair(settings: dict, **kwargs: Any) -> Tuple[LocalREPL, RlmSandboxREPL]:
    """LocalREPL and RlmSandboxREPL built with the same arguments."""
    return LocalREPL(**kwargs), RlmSandboxREPL(**kwargs, **settings)


def _completion(prompt: str, response: Any) -> RLMChatCompletion:
    return RLMChatCompletion(
        root_model="child",
        prompt=prompt,
        response=response,
        usage_summary=UsageSummary(model_usage_summaries={}),
        execution_time=0.0,
    )


def _chained(n: int) -> Tuple[Callable[[str, Optional[str]], RLMChatCompletion], List[str]]:
    """A subcall_fn for prompts p0..p{n-1} where p_i finishes only after
    p_{i+1} did: the answers finish in the reverse of prompt order."""
    done = [threading.Event() for _ in range(n)]
    finished: List[str] = []

    def subcall(prompt: str, model: Optional[str]) -> RLMChatCompletion:
        i = int(prompt[1:])
        if i + 1 < n and not done[i + 1].wait(30):
            raise RuntimeError(f"{prompt} waited in vain for p{i + 1}: the prompts did not run at once")
        finished.append(prompt)
        done[i].set()
        return _completion(prompt, "R" + prompt)

    return subcall, finished


def test_rlm_query_batched_records_calls_in_prompt_order(settings: dict) -> None:
    prompts = ["p0", "p1", "p2", "p3"]
    code = f"r = rlm_query_batched({prompts!r})\nprint(r)"
    results = []
    for make in (LocalREPL, lambda **kw: RlmSandboxREPL(**kw, **settings)):
        subcall, finished = _chained(len(prompts))
        env = make(subcall_fn=subcall, max_concurrent_subcalls=4)
        results.append(env.execute_code(code))
        env.cleanup()
        assert finished == prompts[::-1]
    reference, got = results
    assert got.stdout == reference.stdout == "['Rp0', 'Rp1', 'Rp2', 'Rp3']\n"
    assert [c.prompt for c in got.rlm_calls] == [c.prompt for c in reference.rlm_calls] == prompts


def test_llm_query_batched_records_calls_in_prompt_order(settings: dict) -> None:
    prompts = [f"p{i}" for i in range(4)]
    code = f"r = llm_query_batched({prompts!r})\nx = llm_query('single')\nprint(r, x)"
    results, orders = [], []
    for make in (LocalREPL, lambda **kw: RlmSandboxREPL(**kw, **settings)):
        subcall, finished = _chained(len(prompts))

        def sub(messages: List[Dict[str, Any]]) -> str:
            text = user_text(messages)
            return "A" + text if text == "single" else str(subcall(text, None).response)

        with _lm_handler({"sub": sub}) as (_, address):
            env = make(lm_handler_address=address)
            results.append(env.execute_code(code))
            env.cleanup()
        orders.append(finished)
    assert orders == [prompts[::-1]] * 2
    reference, got = results
    assert got.stdout == reference.stdout == "['Rp0', 'Rp1', 'Rp2', 'Rp3'] Asingle\n"
    assert [c.prompt for c in got.rlm_calls] == [c.prompt for c in reference.rlm_calls] == prompts + ["single"]


class _Peak:
    """Counts the callers inside at once. Each waits for one more than
    `limit` to be inside (or half a second): without a bound the peak
    passes the limit at once; with it, it cannot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.peak = 0
        self.cond = threading.Condition()

    def enter(self) -> None:
        with self.cond:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.inside > self.limit, timeout=0.5)
            self.inside -= 1


def test_rlm_query_batched_runs_at_most_max_concurrent_subcalls(settings: dict) -> None:
    prompts = [f"p{i}" for i in range(6)]
    code = f"print(rlm_query_batched({prompts!r}))"
    peaks, outputs = [], []
    for make in (LocalREPL, lambda **kw: RlmSandboxREPL(**kw, **settings)):
        peak = _Peak(2)

        def subcall(prompt: str, model: Optional[str]) -> RLMChatCompletion:
            peak.enter()
            return _completion(prompt, "R" + prompt)

        env = make(subcall_fn=subcall, max_concurrent_subcalls=2)
        outputs.append(env.execute_code(code).stdout)
        env.cleanup()
        peaks.append(peak.peak)
    assert peaks == [2, 2]
    assert outputs[1] == outputs[0] == str(["R" + p for p in prompts]) + "\n"


def test_llm_query_batched_is_bounded_by_the_sessions_in_flight_limit(settings: dict) -> None:
    peak = _Peak(2)

    def sub(messages: List[Dict[str, Any]]) -> str:
        peak.enter()
        return "A" + user_text(messages)

    with _lm_handler({"sub": sub}) as (_, address):
        env = RlmSandboxREPL(lm_handler_address=address, llm_max_in_flight=2, **settings)
        result = env.execute_code("print(llm_query_batched(['a', 'b', 'c', 'd', 'e']))")
        env.cleanup()
    assert result.stdout == "['Aa', 'Ab', 'Ac', 'Ad', 'Ae']\n"
    assert peak.peak == 2


def test_compaction_history_is_restored_after_the_model_rebinds_it(settings: dict) -> None:
    outputs = []
    for env in _pair(settings, compaction=True):
        env.execute_code("history.append({'type': 'note', 'content': 'by the model'})")
        # Builtins shadowed too: the environment's own code must not care.
        env.execute_code("history = 'corrupted'\nlist = dict = isinstance = globals = exec = None")
        env.append_compaction_entry({"type": "summary", "content": "s"})
        outputs.append(env.execute_code("print(type(history).__name__, history)").stdout)
        env.execute_code("history = None")
        env.append_compaction_entry([{"role": "user", "content": "u"}])
        outputs.append(env.execute_code("print(len(history), history[-1])").stdout)
        env.cleanup()
    assert outputs[:2] == outputs[2:]
    assert outputs[0] == "list [{'type': 'note', 'content': 'by the model'}, {'type': 'summary', 'content': 's'}]\n"
    assert outputs[1] == "3 [{'role': 'user', 'content': 'u'}]\n"


def test_a_malformed_sub_call_result_is_an_error_not_a_completion(settings: dict) -> None:
    results = {
        "none": None,
        "object": object(),
        "no_str": _completion("no_str", None),
        "surrogate": _completion("surrogate", "half a pair: \ud800"),
        "good": _completion("good", "fine"),
    }
    env = RlmSandboxREPL(subcall_fn=lambda prompt, model: results[prompt], llm_timeout=20, **settings)
    got = env.execute_code(f"r = rlm_query_batched({list(results)!r})\ns = rlm_query('none')\nprint(r[-1], s)")
    answers = [env.session.exec(f"print(r[{i}])").stdout for i in range(4)]
    env.cleanup()
    assert got.stderr == ""
    assert got.stdout.startswith("fine Error: RLM query failed - the result is a NoneType without a str response")
    for answer, kind in zip(answers, ["NoneType", "object", "RLMChatCompletion"]):
        assert answer.startswith(f"Error: RLM query failed - the result is a {kind} without a str response"), answer
    assert answers[3].startswith("Error: RLM query failed - the response is not valid Unicode text"), answers[3]
    assert [c.prompt for c in got.rlm_calls] == ["good"]


def test_code_string_tools_run_in_the_sandbox(settings: dict, state_dir: Path) -> None:
    tools = {
        "double": "def double(x):\n    return 2 * x",
        "shout": {"tool": "def shout(s): return s.upper() + '!'", "description": "loud"},
        "ask": "import json\ndef ask(q):\n    return json.dumps(llm_query(q))",
        "Box": "class Box:\n    size = 3",
        "greeting": "hello",
    }
    env = RlmSandboxREPL(custom_tools=tools, **settings)
    first = env.execute_code("print(double(4), shout(greeting), ask('q'), Box.size)\ndouble = 'rebound'")
    second = env.execute_code("print(double(5), 'json' in globals())")
    env.cleanup()
    assert (first.stdout, first.stderr) == ('8 HELLO! "Error: No LM handler configured" 3\n', "")
    # Rebound by the model, put back after the cell; the tools' own imports stay theirs.
    assert (second.stdout, second.stderr) == ("10 False\n", "")
    assert "greeting" in second.locals and not {"double", "shout", "ask", "Box"} & set(second.locals)
    with pytest.raises(RuntimeError, match="custom tool 'twice': its code defines no 'twice'"):
        RlmSandboxREPL(custom_tools={"twice": "lambda x: 2 * x"}, **settings)
    assert not list(state_dir.iterdir())  # the failed environment's sandbox is gone


PARITY_CELLS = [
    "x = 1\nprint(x, LIMIT, double(2))",
    "x + 1",
    "import json\ndef f():\n    return 2\ny = [1, 2]\nt = (1,)\ns = {3}",
    "llm_query = 5\nrlm_query = 5\nllm_query_batched = 5\nrlm_query_batched = 5\nSHOW_VARS = 3\n"
    "double = 0\ncontext = 'overwritten'\nhistory = 'h'",
    "print(callable(llm_query), callable(rlm_query), callable(llm_query_batched), callable(rlm_query_batched),"
    " callable(SHOW_VARS), double(3), context, type(history).__name__, len(history))",
    "answer = {'content': 'draft', 'ready': False}",
    "print(answer['content'], answer['ready'])",
    "answer = {'content': 'rebound', 'ready': True}",
    "answer['content'] = 'set'\nanswer['ready'] = True",
    "w = 1 / 0",
    "import sys\nprint('to stderr', file=sys.stderr)",
    "ADD_CONTEXT",
    "print(context_1, context, context_0)",
    "ADD_HISTORY",
    "print(len(history_1), len(history), type(history_0).__name__)",
    "print(llm_query('q'), rlm_query('q'), rlm_query_batched(['a']), llm_query_batched([]))",
    # Names starting with "_" do not outlive their cell; nor do the bindings of a cell that raised.
    "_private = 1\n__dunder__ = 2\npublic = 3\nprint(_private)",
    "print('_private' in dir(), '__dunder__' in dir(), public)",
    "kept = 1",
    "lost = 2\nkept = 5\nraise ValueError('boom')",
    "print(kept, 'lost' in dir())",
]


def _listed(result: REPLResult) -> List[str]:
    """The names rlms's prompt formatter lists as "REPL variables"."""
    text = format_execution_result(result)
    return text.split("REPL variables: ", 1)[1].strip() if "REPL variables: " in text else ""


def test_the_observables_match_local_repl(settings: dict) -> None:
    kwargs: Dict[str, Any] = {
        "context_payload": "the context",
        "custom_tools": {"LIMIT": 3, "double": lambda x: 2 * x},
    }
    runs: List[List[Any]] = []
    for env in _pair(settings, **kwargs):
        env.add_history([{"role": "user", "content": "first"}])
        seen = []
        for code in PARITY_CELLS:
            if code == "ADD_CONTEXT":
                seen.append((env.add_context({"second": 2}), env.get_context_count()))
                continue
            if code == "ADD_HISTORY":
                seen.append((env.add_history([{"role": "user", "content": "a"}] * 2), env.get_history_count()))
                continue
            r = env.execute_code(code)
            assert isinstance(r.execution_time, float) and r.execution_time > 0
            last_error_line = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            seen.append((code, r.stdout, last_error_line, r.final_answer, _listed(r), r.rlm_calls))
        env.cleanup()
        runs.append(seen)
    reference, got = runs
    for ref, ours in zip(reference, got):
        assert ours == ref


def test_show_vars_lists_what_local_repl_lists(settings: dict) -> None:
    shown = []
    for env in _pair(settings, context_payload="the context"):
        env.execute_code("x = 1\n_y = 2")
        r = env.execute_code("print(SHOW_VARS())")
        env.cleanup()
        assert r.stdout.startswith("Available variables: "), r.stdout
        listed = ast.literal_eval(r.stdout.split(": ", 1)[1])
        # LocalREPL lists the file handle its own add_context code leaves behind; the sandbox has none.
        listed.pop("f", None)
        shown.append(list(listed.items()))
    reference, got = shown
    assert got == reference == [("context_0", "str"), ("context", "str"), ("x", "int")]


def test_session_exec_takes_the_rlms_namespace_and_refuses_others(settings: dict) -> None:
    with Session(**settings) as s:
        assert s.exec("kept = 1").status == "ok"
        assert s.exec("kept = 2\n_tmp = 3\n1 / 0", namespace="rlms").status == "error"
        assert s.exec("_tmp = 3\nnew = 4", namespace="rlms", vars=True).vars == [
            {"name": "kept", "type": "int", "size": None},
            {"name": "new", "type": "int", "size": None},
        ]
        assert s.exec("print(kept, '_tmp' in dir())").stdout == "1 False\n"
        with pytest.raises(ValueError, match='namespace must be "session" or "rlms"'):
            s.exec("x = 1", namespace="local")
