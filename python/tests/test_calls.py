"""How the client answers the sandbox's calls: a per-call limit on one
kind's items, `current_call()` naming the item a callable answers, and
answers that cannot cross the pipe turned into errors instead of calls
left waiting. The first two without a sandbox (the answerer alone), the
last on both runtimes."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

import pytest

from rlm_sandbox import Session
from rlm_sandbox.calls import MAX_RESULT_LINE, CallAnswerer, CallItem, current_call, fit_results


class _Sent:
    """The answerer's `send`: keeps the messages, signals the first."""

    def __init__(self) -> None:
        self.messages: List[Dict[str, Any]] = []
        self.event = threading.Event()

    def __call__(self, message: Dict[str, Any]) -> None:
        self.messages.append(message)
        self.event.set()


class _Peak:
    """Counts the callers inside at once; each waits for one more than
    `limit` to come in (or half a second), so an unbounded batch passes
    the limit at once and a bounded one cannot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.peak = 0
        self.items: List[Optional[CallItem]] = []
        self.cond = threading.Condition()

    def __call__(self, prompt: str, model: Optional[str]) -> str:
        with self.cond:
            self.items.append(current_call())
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.inside > self.limit, timeout=0.5)
            self.inside -= 1
        return prompt.upper()


@pytest.mark.parametrize("kind, peak", [("rlm_query", 2), ("llm_query", 3)])
def test_a_per_call_limit_bounds_one_kinds_items(kind: str, peak: int) -> None:
    sent, fn = _Sent(), _Peak(2)
    answerer = CallAnswerer(sent, 8, fn, fn, {}, {"rlm_query": 2})
    answerer.answer({"event": "call", "call": 7, "kind": kind, "model": None, "prompts": list("abcdef")})
    assert sent.event.wait(30)
    answerer.close()
    assert sent.messages == [{"op": "call_result", "call": 7, "results": list("ABCDEF")}]
    # llm_query has no limit here: more than two of its items ran at once.
    assert fn.peak == peak if kind == "rlm_query" else fn.peak >= peak
    assert sorted((i.call, i.index, i.kind) for i in fn.items if i) == [(7, n, kind) for n in range(6)]
    assert current_call() is None


def test_an_unsendable_answer_is_an_error_and_the_call_is_answered(settings: dict) -> None:
    lone = "half a pair: \ud800"
    huge = "x" * (MAX_RESULT_LINE + 1)
    answers = {"bad": lone, "huge": huge}
    with Session(
        llm=lambda prompt, model: answers.get(prompt, prompt),
        tools={"bad_tool": lambda: lone, "huge_tool": lambda: {"text": huge}, "good_tool": lambda: "ok"},
        llm_timeout=20,
        **settings,
    ) as s:
        cell = s.exec(
            "for r in llm_query_batched(['bad', 'huge', 'good']):\n    print(r)\n"
            "print(bad_tool())\nprint(huge_tool())\nprint(good_tool())"
        )
        after = s.exec("print('alive')")
    lines = cell.stdout.splitlines()
    assert cell.status == "ok", cell.stderr
    too_big = f"Error: the answer of {MAX_RESULT_LINE + 3} bytes does not fit in a call result"
    assert lines[0] == "Error: the answer is not valid Unicode text (surrogates not allowed at position 13)"
    assert lines[1].startswith(too_big) and lines[2] == "good"
    assert lines[3] == "Error: bad_tool() returned a str, which is not a JSON value of valid Unicode text"
    assert lines[4].startswith(f"Error: the answer of {MAX_RESULT_LINE + 13} bytes does not fit")
    assert lines[5] == "ok"
    assert after.stdout == "alive\n"


def test_only_the_largest_answers_give_way() -> None:
    results = ["a" * 600, "b" * 100, "c" * 400]
    assert fit_results(results, limit=2000) == results
    fitted = fit_results(results, limit=1000)
    assert fitted[1:] == results[1:] and fitted[0].startswith("Error: the answer of 602 bytes does not fit")


def test_rlm_concurrency_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match="rlm_concurrency must be a positive int or None, not 0"):
        Session(rlm_concurrency=0)
