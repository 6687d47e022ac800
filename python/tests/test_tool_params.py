"""A tool's parameter names, as the sandbox's function gets them: read
from a plain function's code (the claim path's fast way) they must be
what inspect.signature gives, for every shape a function can have; the
rest goes through inspect.signature itself. No sandbox needed."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, List

import pytest

from rlm_sandbox.calls import tool_params


def _by_inspect(fn: Callable[..., Any]) -> List[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


def _plain(a: int, b: str = "x") -> None: ...
def _posonly(a: int, /, b: int, *, c: int) -> None: ...
def _star(*args: Any, **kwargs: Any) -> None: ...
def _mixed(a: int, /, b: int = 1, *rest: Any, c: int, d: int = 2, **kw: Any) -> None: ...
def _locals(a: int) -> int:
    inner = a + 1
    return inner
def _none() -> None: ...
def _kwonly(*, name: str, kwargs: Any) -> None: ...


def _closure() -> Callable[..., Any]:
    seen = 1

    def host_tool(name: str, kwargs: Any) -> Any:
        return seen, name, kwargs
    return host_tool


@pytest.mark.parametrize("fn", [_plain, _posonly, _star, _mixed, _locals, _none, _kwonly, _closure(),
                                lambda x, y=2: None, lambda *a: None])
def test_a_plain_functions_parameters_read_from_its_code_are_inspects(fn: Callable[..., Any]) -> None:
    assert tool_params("t", fn) == _by_inspect(fn)


def _shown(a: int, b: int) -> None: ...


def _with_signature() -> Callable[..., Any]:
    def f(*args: Any) -> None: ...
    f.__signature__ = inspect.Signature([inspect.Parameter("q", inspect.Parameter.POSITIONAL_OR_KEYWORD)])  # type: ignore[attr-defined]
    return f


class _Callable:
    def __call__(self, p: int, *, k: int) -> None: ...

    def method(self, m: int) -> None: ...


@pytest.mark.parametrize("fn, want", [
    (functools.wraps(_shown)(lambda *a, **k: None), ["a", "b"]),  # __wrapped__: the wrapped function's
    (_with_signature(), ["q"]),  # __signature__ wins, as in inspect
    (functools.partial(_plain, 1), ["b"]),
    (_Callable(), ["p", "k"]),
    (_Callable().method, ["m"]),  # bound: self left out
])
def test_other_callables_get_inspects_parameters(fn: Callable[..., Any], want: List[str]) -> None:
    assert tool_params("t", fn) == want == _by_inspect(fn)
