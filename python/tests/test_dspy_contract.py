"""SandboxInterpreter against DSPy's own reference, LocalInterpreter, on
both runtimes: each item of the CodeInterpreter contract is run on both
interpreters in the same test and the results compared (issue 18)."""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Dict, List

import dspy
import pytest
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspy.primitives.local_interpreter import LocalInterpreter
from dspy.utils.dummies import DummyLM

from rlm_sandbox.dspy import SandboxInterpreter

Factory = Callable[..., Any]


@pytest.fixture
def kinds(settings: dict) -> Dict[str, Factory]:
    """The reference and ours, each a constructor taking DSPy's arguments."""
    return {"local": LocalInterpreter, "sandbox": functools.partial(SandboxInterpreter, **settings)}


def outcome(interp: Any, code: str, variables: Any = None) -> Any:
    """What execute gives: its result, or the kind of exception it raised."""
    try:
        return interp.execute(code, variables)
    except (SyntaxError, CodeInterpreterError) as e:
        return type(e)


def on_both(kinds: Dict[str, Factory], steps: List[Any], **kwargs: Any) -> Dict[str, List[Any]]:
    """Runs the same code steps on a fresh interpreter of each kind."""
    results: Dict[str, List[Any]] = {}
    for name, make in kinds.items():
        with make(**kwargs) as interp:
            results[name] = [outcome(interp, code) for code in steps]
    return results


VALUE_STEPS = [
    "40 + 2",
    "x = 6\nx * 7",
    "print('printed')\n'the value wins'",
    "print('only printed')",
    "import sys\nprint('err', file=sys.stderr)",
    "print('a')\nNone",
    "y = 1",
    "0",
    "{'k': (1, 2), 3: [None, True, 1.5]}",
    "{1, 2}",
    "float('nan')",
    "class P:\n    def __repr__(self):\n        return 'P!'\nP()",
    "'keeps its newline\\n'",
    "print('x\\n\\n')",
    "import json\njson.dumps({'answer': 'a', 'n': 2})",
]


def test_a_trailing_expression_s_value_is_returned_as_local_interpreter_does(kinds: Dict[str, Factory]) -> None:
    results = on_both(kinds, VALUE_STEPS)
    assert results["local"][0] == 42  # the reference, as read in its source
    for code, local, ours in zip(VALUE_STEPS, results["local"], results["sandbox"]):
        assert ours == local, code


def test_start_is_lazy_and_idempotent(kinds: Dict[str, Factory]) -> None:
    local, ours = kinds["local"](), kinds["sandbox"]()
    try:
        assert local._process is None and ours.session is None
        local.start()
        ours.start()
        process, session = local._process, ours.session
        assert process is not None and session is not None
        local.start()
        ours.start()
        assert local._process is process and ours.session is session
        assert outcome(local, "1") == outcome(ours, "1") == 1
    finally:
        local.shutdown()
        ours.shutdown()


def test_submit_without_output_fields_is_one_output(kinds: Dict[str, Factory]) -> None:
    results = on_both(kinds, ["SUBMIT(42)", "SUBMIT({'a': [1]})"])
    assert results["local"] == results["sandbox"] == [FinalOutput({"output": 42}), FinalOutput({"output": {"a": [1]}})]
    # Output fields set to none at all: SUBMIT() submits nothing.
    results = on_both(kinds, ["SUBMIT()"], output_fields=[])
    assert results["local"] == results["sandbox"] == [FinalOutput({})]


def test_typed_submit_with_wrong_fields_is_a_code_error_and_the_interpreter_lives_on(kinds: Dict[str, Factory]) -> None:
    fields = [{"name": "answer", "type": "str"}, {"name": "count", "type": "int"}]
    steps = [
        "kept = 'state'\nSUBMIT(answer='a')",
        "SUBMIT(answer='a', count=1, extra=2)",
        "SUBMIT('a', 1, 2)",
        "kept",
        "SUBMIT('a', 2)",
        "SUBMIT(count=3, answer='b')",
    ]
    results = on_both(kinds, steps, output_fields=fields)
    assert results["local"] == results["sandbox"] == [
        CodeExecutionError, CodeExecutionError, CodeExecutionError, "state",
        FinalOutput({"answer": "a", "count": 2}), FinalOutput({"answer": "b", "count": 3}),
    ]


def test_syntax_and_runtime_errors_keep_the_state(kinds: Dict[str, Factory]) -> None:
    steps = ["kept = 7", "if", "1/0", "def (", "exec('(')", "kept", "raise KeyError('k')", "kept + 1"]
    results = on_both(kinds, steps)
    assert results["local"] == results["sandbox"] == [
        None, SyntaxError, CodeExecutionError, SyntaxError, SyntaxError, 7, CodeExecutionError, 8,
    ]


def test_host_tools_are_called_by_keyword(kinds: Dict[str, Factory]) -> None:
    calls: Dict[str, List[Any]] = {"local": [], "sandbox": []}

    def tools(name: str) -> Dict[str, Callable[..., Any]]:
        def lookup(key: str, default: str = "none") -> str:
            calls[name].append(("lookup", key, default))
            return {"a": "apple"}.get(key, default)

        def search(*, query: str, limit: int = 2) -> List[str]:
            calls[name].append(("search", query, limit))
            return [query] * limit

        def spread(**kwargs: Any) -> Dict[str, Any]:
            calls[name].append(("spread", sorted(kwargs)))
            return kwargs

        return {"lookup": lookup, "search": search, "spread": spread}

    steps = [
        "lookup(key='a')",
        "lookup('z', default='?')",
        "lookup(key='z')",
        "search(query='q')",
        "search(query='q', limit=3)",
        "spread(b=1, a={'x': [1]})",
    ]
    results = {}
    for name, make in kinds.items():
        with make(tools=tools(name)) as interp:
            results[name] = [outcome(interp, code) for code in steps]
    assert results["local"] == results["sandbox"] == [
        "apple", "?", "none", ["q", "q"], ["q", "q", "q"], {"b": 1, "a": {"x": [1]}},
    ]
    assert calls["local"] == calls["sandbox"]


def test_start_and_execute_after_shutdown_are_terminal(kinds: Dict[str, Factory]) -> None:
    for name, make in kinds.items():
        for started in (True, False):
            interp = make()
            if started:
                assert interp.execute("1") == 1
            interp.shutdown()
            for again in (interp.start, lambda: interp.execute("1")):
                with pytest.raises(CodeInterpreterError) as ended:
                    again()
                # Terminal: not the recoverable subclass RLM shows the model, no silent restart.
                assert not isinstance(ended.value, CodeExecutionError), name
            interp.shutdown()  # idempotent


def test_two_interpreters_from_one_factory_share_nothing(kinds: Dict[str, Factory]) -> None:
    for name, make in kinds.items():
        shared_tools = {"one": lambda: 1}
        shared_fields = [{"name": "answer", "type": "str"}]
        factory = functools.partial(make, tools=shared_tools, output_fields=shared_fields)
        a, b = factory(), factory()
        try:
            assert a.execute("x = 'a'\nx") == "a"
            assert b.execute("'x' in globals()") is False, name
            a.tools["two"] = lambda: 2
            a.output_fields.append({"name": "extra", "type": "str"})
            assert "two" not in b.tools and "two" not in shared_tools, name
            assert len(shared_fields) == 1 and len(b.output_fields) == 1, name
            assert b.execute("SUBMIT(answer='b')") == FinalOutput({"answer": "b"}), name
            assert a.execute("two() + one()") == 3, name
        finally:
            a.shutdown()
            b.shutdown()


def test_execution_instructions_are_stable(settings: dict) -> None:
    factory = SandboxInterpreter.factory(**settings)
    text = SandboxInterpreter.execution_instructions
    assert isinstance(text, str) and text
    interp = factory()
    try:
        assert interp.execution_instructions == text
        interp.execute("x = 1")
        assert interp.execution_instructions == text and factory().execution_instructions == text
    finally:
        interp.shutdown()
    # RLM reads them from the factory, before any interpreter exists, as it does LocalInterpreter's.
    assert dspy.RLM._get_execution_instructions(factory) == text
    assert dspy.RLM._get_execution_instructions(LocalInterpreter) == LocalInterpreter.execution_instructions


RLM_STEPS = [
    {"reasoning": "Look.", "code": "```python\nn = len(context.split())\nn * 10\n```"},
    {"reasoning": "Submit.", "code": "SUBMIT(answer=context.split()[0], count=n)"},
]


def test_one_interpreter_is_made_and_shut_down_per_rlm_call(kinds: Dict[str, Factory]) -> None:
    outputs = {}
    for name, make in kinds.items():
        made: List[Any] = []

        def factory() -> Any:
            made.append(make())
            return made[-1]

        rlm = dspy.RLM("context -> answer: str, count: int", max_iters=3, interpreter_factory=factory)
        results = []
        for _ in range(2):
            with dspy.context(lm=DummyLM(RLM_STEPS)):
                results.append(rlm(context="alpha beta gamma"))
        assert len(made) == 2 and made[0] is not made[1], name
        for interp in made:
            with pytest.raises(CodeInterpreterError):
                interp.execute("1")
        outputs[name] = [(r.answer, r.count, [step["output"] for step in r.trajectory]) for r in results]
    assert outputs["local"] == outputs["sandbox"]
    # The first step's trailing expression is its output, as on the reference.
    assert outputs["sandbox"][0] == ("alpha", 3, ["30", "FINAL: {'answer': 'alpha', 'count': 3}"])


FLEX_SOURCE = '''
class ReverseModule(dspy.Module):
    def __init__(self):
        super().__init__()
        self.step = dspy.Predict("question -> answer")

    def forward(self, question):
        words = question.split()
        draft = self.step(question=" ".join(reversed(words)))
        return dspy.Prediction(answer=draft.answer.upper() + " (" + str(len(words)) + " words)")
'''


def test_a_flex_program_gives_local_interpreter_s_result_and_holds_no_interpreter(kinds: Dict[str, Factory]) -> None:
    results = {}
    for name, make in kinds.items():
        made: List[Any] = []

        def factory() -> Any:
            made.append(make())
            return made[-1]

        flex = dspy.Flex("question -> answer", interpreter_factory=factory)
        flex.load_state({"module_src": FLEX_SOURCE, "lm": None})  # binds the module source
        with dspy.context(lm=DummyLM([{"answer": "blue"}, {"answer": "green"}])):
            first = flex(question="what colour is it")
            state = flex.dump_state()
            # The state is plain data: the source, no interpreter.
            assert state == {"module_src": FLEX_SOURCE, "lm": None}, name
            assert json.loads(json.dumps(state)) == state
            again = dspy.Flex("question -> answer", interpreter_factory=factory)
            again.load_state(state)
            second = again(question="and now")
        # Nor does the module itself keep one (its bridge is dropped from its pickled state).
        for module in (flex, again):
            assert not [v for v in vars(module).values() if isinstance(v, (LocalInterpreter, SandboxInterpreter))]
            assert "_bridge" not in module.__getstate__()
        assert len(made) == 2
        for interp in made:  # one per forward, shut down after it
            with pytest.raises(CodeInterpreterError):
                interp.execute("1")
        results[name] = (dict(first), dict(second))
    assert results["sandbox"] == results["local"] == (
        {"answer": "BLUE (4 words)"}, {"answer": "GREEN (2 words)"},
    )


# -- differences found by comparing the two, beyond the list ---------------------------------------------


class ToolCalls(dspy.utils.callback.BaseCallback):
    """Records what DSPy's interpreter callbacks see of each tool call."""

    def __init__(self) -> None:
        self.inputs: List[Dict[str, Any]] = []

    def on_interpreter_tool_call_start(self, call_id: str, instance: Any, inputs: Dict[str, Any]) -> None:
        self.inputs.append(dict(inputs))


def test_tools_get_their_arguments_as_the_code_gave_them(kinds: Dict[str, Factory]) -> None:
    def join(first: str, /, *rest: str, sep: str = "-") -> str:
        return sep.join([first, *rest])

    async def total(*numbers: int) -> int:
        return sum(numbers)

    def lookup(key: str, default: str = "none") -> str:
        return {"a": "apple"}.get(key, default)

    steps = [
        "join('a', 'b', 'c')",
        "join('a', sep='+')",
        "join('x', 'y', sep='')",
        "total(1, 2, 3)",
        "lookup('a')",
        "lookup(key='z', default='?')",
    ]
    results, seen = {}, {}
    for name, make in kinds.items():
        recorder = ToolCalls()
        with make(tools={"join": join, "total": total, "lookup": lookup}, callbacks=[recorder]) as interp:
            results[name] = [outcome(interp, code) for code in steps]
        seen[name] = recorder.inputs
    assert results["local"] == results["sandbox"] == ["a-b-c", "a", "xy", 6, "apple", "?"]
    # Callbacks see the same call: tool_name, args (by position), kwargs.
    assert seen["local"] == seen["sandbox"]
    assert seen["sandbox"][4] == {"tool_name": "lookup", "args": ["a"], "kwargs": {}}


def test_constructor_arguments_as_local_interpreter_takes_them(kinds: Dict[str, Factory]) -> None:
    for name, make in kinds.items():
        for tools in ({"SUBMIT": print}, {"not valid": print}, {"class": print}):
            with pytest.raises(ValueError, match="tool names"):
                make(tools=tools)
        for fields in ([{"name": "a"}, {"name": "a"}], [{"name": "1x"}], [{"name": "a", "type": float("nan")}]):
            with pytest.raises(ValueError, match="output field"):
                make(output_fields=fields)
        with pytest.raises(ValueError, match="execution_timeout"):
            make(execution_timeout=0)
    # LocalInterpreter's per-step limit under its own name.
    with kinds["sandbox"](execution_timeout=2) as interp:
        with pytest.raises(CodeExecutionError, match=r"time limit \(2"):
            interp.execute("while True:\n    pass")
        assert interp.execute("'alive'") == "alive"


def test_a_submit_the_code_catches_submits_nothing(kinds: Dict[str, Factory]) -> None:
    steps = [
        "try:\n    SUBMIT(1)\nexcept:\n    print('caught')",
        "try:\n    SUBMIT(2)\nexcept BaseException:\n    pass\n'went on'",
        "try:\n    SUBMIT(3)\nexcept Exception:\n    pass",
        "'no old submission'",
    ]
    results = on_both(kinds, steps)
    assert results["local"] == results["sandbox"] == [
        "caught", "went on", FinalOutput({"output": 3}), "no old submission",
    ]


def test_inputs_cannot_replace_the_interpreter_s_own_globals(kinds: Dict[str, Factory]) -> None:
    for name, make in kinds.items():
        with make(tools={"lookup": print}) as interp:
            for bad in ({"__builtins__": 1}, {"SUBMIT": 1}, {"lookup": 1}, {"not valid": 1}):
                with pytest.raises(CodeInterpreterError) as refused:
                    interp.execute("print(1)", bad)
                assert not isinstance(refused.value, CodeExecutionError), (name, bad)
            assert interp.execute("print('builtins intact')") == "builtins intact", name


def test_program_of_thought_sees_the_code_s_value_as_on_local_interpreter(kinds: Dict[str, Factory]) -> None:
    # ProgramOfThought turns a last assignment into a trailing expression
    # and shows its value (JSON) to the answer step.
    seen = {}
    for name, make in kinds.items():
        lm = DummyLM([
            {"reasoning": "compute", "generated_code": "```python\nrows = [3, 4]\ntotal = {'sum': sum(rows) * 6}\n```"},
            {"reasoning": "done", "answer": "42"},
        ])
        with dspy.context(lm=lm):
            assert dspy.ProgramOfThought("question -> answer", interpreter_factory=make)(question="q").answer == "42"
        prompt = lm.history[-1]["messages"][-1]["content"]
        seen[name] = prompt.split("[[ ## code_output ## ]]\n", 1)[1].split("\n", 1)[0]
    assert seen["local"] == seen["sandbox"] == '{"sum": 42}'


def test_a_flex_baseline_with_tools_runs_its_rlm_on_the_same_backend(kinds: Dict[str, Factory]) -> None:
    def lookup(key: str) -> str:
        """Looks a key up."""
        return {"sky": "blue"}.get(key, "?")

    results = {}
    for name, make in kinds.items():
        made: List[Any] = []

        def factory() -> Any:
            made.append(make())
            return made[-1]

        # The baseline module builds dspy.RLM(tools=[lookup]) in the sandbox; its
        # steps run in a second interpreter from the same factory.
        lm = DummyLM([
            {"reasoning": "look", "code": "```python\nv = lookup(key='sky')\nv.upper()\n```"},
            {"reasoning": "submit", "code": "SUBMIT(answer=v)"},
        ])
        with dspy.context(lm=lm):
            results[name] = dict(dspy.Flex("question -> answer", tools=[lookup], interpreter_factory=factory)(question="?"))
        assert len(made) == 2, name
        for interp in made:
            with pytest.raises(CodeInterpreterError):
                interp.execute("1")
    assert results["local"] == results["sandbox"] == {"answer": "blue"}
