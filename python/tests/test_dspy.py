"""SandboxInterpreter (DSPy's CodeInterpreter on rlm-sandbox), on both
runtimes: a dspy.RLM program driven end to end by DSPy's own DummyLM,
then the contract piece by piece: SUBMIT, printed output and code
errors, a dead sandbox, inputs sent once, large inputs as context files,
tools read at call time, llm_query through DSPy's tool, and cleanup."""

from __future__ import annotations

import contextvars
import dataclasses
import gc
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List

import dspy
import pytest
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspy.utils.dummies import DummyLM

from rlm_sandbox import Session
from rlm_sandbox.dspy import INLINE_BYTES, SandboxInterpreter

from conftest import assert_clean

ROOT_STEPS = [
    {
        "reasoning": "Look at the data, ask the sub-LM, and build a sub-agent.",
        "code": "```python\nwords = context.split()\n"
        "label = llm_query('Label: ' + words[0]).splitlines()[-1]\n"
        "import dspy\nkind = dspy.Predict('text -> kind')(text='a fruit: ' + words[1]).kind\n"
        "print(len(words), label, kind)\n```",
    },
    {"reasoning": "Submit what the last step printed.", "code": "SUBMIT(answer=label + '/' + kind, count=len(words))"},
]


def _spy(session: Session) -> Dict[str, List[Any]]:
    """Records the cells (their code; their setups apart) and contexts the
    interpreter sends to its (real) session."""
    log: Dict[str, List[Any]] = {"exec": [], "setup": [], "add_context": []}
    real_exec, real_add = session.exec, session.add_context

    def exec_(code: str, *args: Any, **kwargs: Any) -> Any:
        log["exec"].append(code)
        if kwargs.get("setup") is not None:
            log["setup"].append(kwargs["setup"])
        return real_exec(code, *args, **kwargs)

    def add_context(value: Any, *args: Any, **kwargs: Any) -> Any:
        log["add_context"].append(value)
        return real_add(value, *args, **kwargs)

    session.exec, session.add_context = exec_, add_context  # type: ignore[method-assign]
    return log


def test_an_rlm_program_reaches_its_typed_outputs(settings: dict, state_dir: Path) -> None:
    made: List[SandboxInterpreter] = []

    def factory() -> SandboxInterpreter:
        made.append(SandboxInterpreter(**settings))
        return made[-1]

    # The sub-LM answers llm_query and the sub-agent the code builds with
    # `import dspy` (DSPy's facade, run on the host through the tools).
    sub_lm = DummyLM({"Label: alpha": {"label": "ALPHA"}, "a fruit: beta": {"kind": "mango"}})
    rlm = dspy.RLM("context -> answer: str, count: int", max_iters=4, sub_lm=sub_lm, interpreter_factory=factory)
    with dspy.context(lm=DummyLM(ROOT_STEPS)):
        result = rlm(context="alpha beta gamma")
    assert (result.answer, result.count) == ("ALPHA/mango", 3)
    assert isinstance(result.count, int)
    assert result.trajectory[0]["output"] == "3 ALPHA mango"
    assert len(result.trajectory) == 2
    # RLM shut its interpreter down: nothing of the sandbox is left.
    assert len(made) == 1 and made[0].session is None
    assert made[0].pid is not None
    assert_clean(state_dir, made[0].pid)


def test_submit_returns_every_output_field_and_ends_the_step(settings: dict) -> None:
    fields = [{"name": "answer", "type": "str"}, {"name": "count", "type": "int"}]
    with SandboxInterpreter(output_fields=fields, **settings) as interp:
        assert interp.execute("SUBMIT(answer='yes', count=2)\nprint('not reached')") == FinalOutput(
            {"answer": "yes", "count": 2}
        )
        # By position too; `except Exception` in the code does not catch it:
        # nothing after SUBMIT runs.
        swallow = "try:\n    SUBMIT('pos', 3)\nexcept Exception:\n    pass\nran_on = True"
        assert interp.execute(swallow) == FinalOutput({"answer": "pos", "count": 3})
        assert interp.execute("print('ran_on' in globals())") == "False"
        with pytest.raises(CodeExecutionError, match="missing a required argument: 'count'"):
            interp.execute("SUBMIT(answer='only one')")
        # An old SUBMIT never ends a later step, and FINAL (rlms' convention) is not SUBMIT.
        assert interp.execute("print('next')") == "next"
        assert interp.execute("FINAL('x')\nprint('final')") == "final"
        # Values JSON has no form for: a set is a sorted list, a tuple a list.
        assert interp.execute("SUBMIT(answer={3, 1, 2}, count=(1, 2))") == FinalOutput(
            {"answer": [1, 2, 3], "count": [1, 2]}
        )
        # New output fields redefine SUBMIT; without any it is SUBMIT(output), as in DSPy.
        interp.output_fields = None
        assert interp.execute("SUBMIT('all')") == FinalOutput({"output": "all"})


def test_printed_output_and_code_errors(settings: dict) -> None:
    with SandboxInterpreter(timeout=3, **settings) as interp:
        assert interp.execute("x = 6 * 7") is None
        assert interp.execute("print(x)") == "42"
        assert interp.execute("import sys\nprint('out')\nprint('warn', file=sys.stderr)") == "out\nwarn"
        with pytest.raises(CodeExecutionError) as failed:
            interp.execute("print('before')\n1 / 0")
        text = str(failed.value)
        assert text.startswith("before\n") and "line 2" in text and text.endswith("ZeroDivisionError: division by zero")
        for bad in ("def (", "  indented = 1", "exec('(')"):
            with pytest.raises(SyntaxError):
                interp.execute(bad)
        with pytest.raises(CodeExecutionError, match="time limit"):
            interp.execute("while True:\n    pass")
        # Code faults are recoverable: the state is still there.
        assert interp.execute("print(x)") == "42"


def test_a_dead_sandbox_is_a_code_interpreter_error_every_time(settings: dict, state_dir: Path) -> None:
    interp = SandboxInterpreter(memory="256m", **settings)
    assert interp.execute("x = 1") is None
    pid = interp.pid
    assert pid is not None
    with pytest.raises(CodeInterpreterError, match="oom") as died:
        interp.execute("x = bytearray(2**30)")
    # Terminal, not a recoverable CodeExecutionError (its subclass), which RLM would show the model.
    assert not isinstance(died.value, CodeExecutionError)
    for again in (lambda: interp.execute("print(x)"), interp.start):
        with pytest.raises(CodeInterpreterError, match="create a new one") as later:
            again()
        assert not isinstance(later.value, CodeExecutionError)
    assert interp.session is None
    assert_clean(state_dir, pid)


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_inputs_are_sent_once_and_bound_every_step(settings: dict) -> None:
    with SandboxInterpreter(**settings) as interp:
        interp.start()
        sent = _spy(interp.session)  # type: ignore[arg-type]
        variables: Dict[str, Any] = {"question": "How many apples?", "rows": [{"n": 1}, {"n": 2}], "limit": 3}
        step = "print(question, sum(r['n'] for r in rows), limit)"
        assert interp.execute(step, variables) == "How many apples? 3 3"
        # One cell: the inputs are bound by its setup (exec's `setup`).
        assert sent["exec"] == [step] and "How many apples?" in sent["setup"][0]
        assert interp.execute("question = 'changed'\nlimit = None") is None
        sent["exec"].clear()
        sent["setup"].clear()
        # The same inputs again: not sent, yet bound again (DSPy's interpreters
        # assign every input at every step, so the code's change is undone).
        assert interp.execute("print(question, limit)", variables) == "How many apples? 3"
        # ... in the step's own cell, without a setup (exec's `restore`).
        assert sent["exec"] == ["print(question, limit)"] and sent["setup"] == []
        # A changed input is sent again, and only that one; the code that
        # rebinds an input does not change what the next step restores.
        variables["question"] = "And pears?"
        sent["exec"].clear()
        assert interp.execute("print(question, len(rows))\nquestion = 'rebound'", variables) == "And pears? 2"
        assert len(sent["exec"]) == 1 and "pears" in sent["setup"][0] and '"n": 1' not in sent["setup"][0]
        assert interp.execute("print(question)", variables) == "And pears?"
        assert sent["add_context"] == []
        # Converted as DSPy's reference does; anything else is the host's error, not the code's.
        converted = {"point": Point(1, 2), "tags": {"b", "a"}, "pair": (1, 2)}
        assert interp.execute("print(point, sorted(tags), pair)", converted) == "{'x': 1, 'y': 2} ['a', 'b'] [1, 2]"
        for bad in ({"opaque": object()}, {"answer": 1}, {"llm_query": "x"}, {"context_0": "x"}, {"not valid": 1}):
            with pytest.raises(CodeInterpreterError) as refused:
                interp.execute("ran = True", bad)
            assert not isinstance(refused.value, CodeExecutionError)
        # The sandbox's own names are refused by the sandbox, before anything is bound or run.
        with pytest.raises(CodeInterpreterError, match="^input name 'llm_query' is one of the sandbox's own names$"):
            interp.execute("ran = True", {"llm_query": "x", "question": "q"})
        assert interp.execute("print('ran' in globals(), callable(llm_query), question)", variables) == "False True And pears?"


def test_a_failed_preparation_is_the_interpreters_error_and_runs_no_code(settings: dict) -> None:
    """A step's inputs are bound by its cell's setup: when that fails (here
    the code broke the sandbox's support module) the code does not run and
    the error is not the code's (CodeInterpreterError, not the recoverable
    CodeExecutionError RLM shows the model)."""
    with SandboxInterpreter(**settings) as interp:
        assert interp.execute("print(q)", {"q": 1}) == "1"
        interp.execute("import sys\nsys.modules['_rlm_sandbox_dspy'].inputs = None")
        with pytest.raises(CodeInterpreterError, match="preparing the step in the sandbox failed") as failed:
            interp.execute("ran = True", {"q": 2})
        assert not isinstance(failed.value, CodeExecutionError) and "TypeError" in str(failed.value)
        assert interp.execute("print('ran' in globals())") == "False"


def test_large_inputs_arrive_as_context_files_once(settings: dict) -> None:
    big = "word " * (INLINE_BYTES // 4)
    table = [{"i": i} for i in range(INLINE_BYTES // 8)]
    assert len(big) > INLINE_BYTES and len(json.dumps(table)) > INLINE_BYTES
    with SandboxInterpreter(**settings) as interp:
        interp.start()
        sent = _spy(interp.session)  # type: ignore[arg-type]
        # `context` is small but goes first as a file: once the sandbox has
        # files, its own `context` is the first one's value.
        variables = {"context": "short", "doc": big, "table": table, "query": "q"}
        step = "print(len(doc), len(table), table[-1]['i'], context, query, [c.size for c in ctxs])"
        expected = f"{len(big)} {len(table)} {len(table) - 1} short q [5, {len(big)}, {len(json.dumps(table))}]"
        assert interp.execute(step, variables) == expected
        assert sent["add_context"] == ["short", big, table]
        assert all(len(code) < INLINE_BYTES for code in sent["exec"])
        # The code rebinds them; the next step restores them without sending them again.
        assert interp.execute("doc = 'x'\ncontext = 'y'\ntable = None") is None
        sent["exec"].clear()
        assert interp.execute("print(len(doc), context, len(table))", variables) == f"{len(big)} short {len(table)}"
        assert sent["exec"] == ["print(len(doc), context, len(table))"]
        assert len(sent["add_context"]) == 3
        # The sandbox's `ctx` is its first file: an input of that name cannot be bound.
        with pytest.raises(CodeInterpreterError, match="ctx"):
            interp.execute("print(1)", {"ctx": "x"})


def test_tools_are_read_at_call_time(settings: dict) -> None:
    with SandboxInterpreter(tools={"double": lambda n: n * 2}, **settings) as interp:
        assert interp.execute("print(double(21))") == "42"

        # Added after the start, as RLM adds its tools: a function with the
        # tool's signature; a default left out is the host's default.
        def lookup(key: str, default: str = "none") -> str:
            return {"a": "apple"}.get(key, default)

        interp.tools["lookup"] = lookup
        assert interp.execute("print(lookup('a'), lookup(key='z'), lookup('z', default='?'))") == "apple none ?"
        with pytest.raises(CodeExecutionError, match=r"lookup\(\) missing 1 required positional argument: 'key'"):
            interp.execute("lookup()")
        # Its parameters as the host function's, for inspect and help()
        # (defaults are the host's: shown as such).
        shown = "(key, default=<host default>)"
        assert interp.execute("import inspect\nstr(inspect.signature(lookup)), lookup.__doc__") == [
            shown, f"Calls the host tool lookup{shown}; a host error is a RuntimeError."
        ]

        # A host exception is a RuntimeError in the code; the session goes on.
        def fail() -> None:
            raise ValueError("no such row")

        interp.tools["fail"] = fail
        assert interp.execute("try:\n    fail()\nexcept RuntimeError as e:\n    print(e)") == "ValueError: no such row"
        # Replaced and removed in place; a private name works (DSPy's facade uses __dspy_call__).
        interp.tools["double"] = lambda n: n * 3
        del interp.tools["fail"]
        interp.tools["__dspy_probe__"] = lambda: {"ok": [1, 2]}
        assert interp.execute("print(double(2), 'fail' in globals(), __dspy_probe__())") == "6 False {'ok': [1, 2]}"
        # A tool may not take one of the sandbox's own names: refused, nothing run.
        interp.tools["FINAL"] = lambda x: x
        with pytest.raises(CodeInterpreterError, match="^tool name 'FINAL' is one of the sandbox's own names$"):
            interp.execute("ran = True")
        del interp.tools["FINAL"]
        assert interp.execute("print('ran' in globals(), double(2))") == "False 6"


def test_llm_query_is_answered_by_dspys_tool(settings: dict) -> None:
    caller = contextvars.ContextVar("caller", default="unset")
    batch = threading.Barrier(2, timeout=30)

    def llm_query(prompt: str) -> str:
        if prompt.startswith("together"):
            batch.wait()  # both prompts of the batch at once, or BrokenBarrierError
        return f"{caller.get()}:{prompt}"

    with SandboxInterpreter(tools={"llm_query": llm_query}, **settings) as interp:
        token = caller.set("rlm")  # dspy.context(lm=...) is a ContextVar like this one
        try:
            assert interp.execute("print(llm_query('one'))") == "rlm:one"
            batched = "print(llm_query_batched(['together 1', 'together 2']))"
            assert interp.execute(batched) == "['rlm:together 1', 'rlm:together 2']"
        finally:
            caller.reset(token)

        # Replaced in place; its failure (DSPy's budget) is an "Error:" answer, the sandbox's convention.
        def over_budget(prompt: str) -> str:
            raise RuntimeError("LLM call limit exceeded")

        interp.tools["llm_query"] = over_budget
        assert interp.execute("print(llm_query('x'))") == "Error: RuntimeError: LLM call limit exceeded"


def test_the_sandbox_starts_lazily_and_leaves_nothing(settings: dict, state_dir: Path) -> None:
    interp = SandboxInterpreter(**settings)
    assert interp.session is None and interp.pid is None
    assert list(state_dir.iterdir()) == []
    with interp:
        assert interp.execute("print('up')") == "up"
        pid = interp.pid
        assert pid is not None
        interp.start()  # idempotent
        assert interp.pid == pid
    assert interp.session is None
    assert_clean(state_dir, pid)
    with pytest.raises(CodeInterpreterError, match="shut down"):
        interp.execute("print(1)")
    interp.shutdown()  # idempotent


def test_a_dropped_interpreter_is_collected_with_its_sandbox(settings: dict, state_dir: Path) -> None:
    interp = SandboxInterpreter(tools={"one": lambda: 1}, **settings)
    assert interp.execute("print(one())") == "1"
    pid = interp.pid
    assert pid is not None
    del interp
    gc.collect()
    assert_clean(state_dir, pid)


def test_settings_are_checked_before_any_start() -> None:
    with pytest.raises(TypeError, match="memroy"):
        SandboxInterpreter(memroy="1g")
    with pytest.raises(TypeError, match="llm_endpoint"):
        SandboxInterpreter(llm_endpoint="http://127.0.0.1:1/v1")
    factory = SandboxInterpreter.factory(memory="512m")
    interp = factory()
    assert isinstance(interp, dspy.CodeInterpreter) and interp.session is None
    # RLM reads the runtime's description from the factory.
    assert dspy.RLM._get_execution_instructions(factory) == SandboxInterpreter.execution_instructions


def test_rlm_sandbox_imports_without_dspy() -> None:
    code = (
        "import sys\nsys.modules['dspy'] = None\nimport rlm_sandbox\n"
        "try:\n    import rlm_sandbox.dspy\nexcept ImportError as e:\n    print('needs', e.name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("needs dspy"), proc.stdout
    # Inside the package, `import dspy` is the real DSPy, not this module.
    import rlm_sandbox.dspy as ours

    assert ours.FinalOutput is dspy.primitives.code_interpreter.FinalOutput
