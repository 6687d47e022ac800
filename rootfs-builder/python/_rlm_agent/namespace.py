"""The user's side: their globals, tracebacks without the agent's
frames, values shown back to the host, tool functions."""

from __future__ import annotations

import _ast
import builtins
import keyword
import reprlib
import sys
import types

from . import cjson
from .interrupts import AGENT_FILE, is_agent_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import deque
    import traceback
    from typing import Any, Callable, Optional

    from .interrupts import AnyFunc
else:
    from _collections import deque  # collections without its import (functools, ...)


# --- Tracebacks ------------------------------------------------------------------------


def _strip_agent_frames(te: traceback.TracebackException, seen: set[int]) -> None:
    """Removes the agent's frames from `te` and the exceptions chained to it."""
    import traceback

    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if not is_agent_file(f.filename)])
    for chained in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())):
        if chained is not None:
            _strip_agent_frames(chained, seen)


def format_user_exception(exc: BaseException) -> str:
    """A traceback as the user expects it: their cells and the library code
    they called, none of the agent's frames around it. traceback is
    imported here, at the first error: its import (linecache, tokenize,
    re) would cost every sandbox's start ~5 ms."""
    import traceback

    te = traceback.TracebackException.from_exception(exc)
    _strip_agent_frames(te, set())
    return "".join(te.format())


# --- The user's namespace -------------------------------------------------------------


MISSING = object()


def new_namespace() -> dict[str, Any]:
    """Fresh user globals: the dict of a `__main__` module of their own,
    registered as sys.modules["__main__"] so pickle, `import __main__` and
    class definitions behave as in a script; the agent's globals stay apart."""
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def new_answer() -> dict[str, Any]:
    return {"content": "", "ready": False}


def is_true(value: Any) -> bool:
    """bool(), for values user code made (whose __bool__ may raise)."""
    try:
        return bool(value)
    except Exception:
        return False


def size_of(value: Any) -> Optional[int]:
    """len(value) where it has one (user __len__ may raise)."""
    if not hasattr(type(value), "__len__"):
        return None
    try:
        size = len(value)
    except Exception:
        return None
    return size if isinstance(size, int) else None


def bounded_repr(value: Any, max_bytes: int) -> tuple[str, bool]:
    """(repr cut to `max_bytes` UTF-8 bytes, whether it was cut). Strings
    and bytes are cut before repr, so a gigabyte string costs little."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > max_bytes:
        value = value[:max_bytes + 1]
    data = repr(value).encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8"), False
    return data[:max_bytes].decode("utf-8", "ignore"), True


# --- A cell's trailing expression ---------------------------------------------------


#: The most of a trailing expression's repr that `done` carries (UTF-8 bytes).
MAX_VALUE_REPR = 64 << 10
#: The largest JSON form a value gets (bytes): larger values (rare for
#: what a step returns) send only their repr, and a cell that ends in a
#: big variable (rlms's REPL, which never shows it) costs little.
MAX_VALUE_JSON = 1 << 20
#: Deeper nesting has no JSON form in `done` (the host's parser stops at 128 levels).
MAX_VALUE_DEPTH = 64
#: Integers outside this range have no JSON form in `done` (the host reads 64-bit integers exactly).
_INT_MIN, _INT_END = -(1 << 63), 1 << 64


def compile_cell(code: str, filename: str) -> tuple[types.CodeType, Optional[types.CodeType]]:
    """The cell's statements and, when the last one is an expression, that
    expression compiled apart, as DSPy's interpreters and notebooks do:
    its value is the cell's value (which rlms's REPL never prints). The
    tree comes from compile() as ast.parse gets it (the `ast` module's
    import is not needed for that); no future statement of the agent's
    is passed on (dont_inherit)."""
    tree = compile(code, filename, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    assert isinstance(tree, _ast.Module)
    last = None
    tail = tree.body[-1] if tree.body else None
    if isinstance(tail, _ast.Expr):
        tree.body.pop()
        expression = _ast.Expression(tail.value)
        last = compile(expression, filename, "eval", dont_inherit=True)
    return compile(tree, filename, "exec", dont_inherit=True), last


def describe_value(value: Any, json_limit: int) -> dict[str, Any]:
    """A trailing expression's value as `done` carries it: its repr (cut to
    MAX_VALUE_REPR bytes) and its JSON form when it has one of at most
    `json_limit` bytes (JSON-able as DSPy's LocalInterpreter tests it:
    json.dumps with allow_nan=False), else null. User code (__repr__,
    mapping subclasses) may run; its failure never fails the cell."""
    try:
        text, cut = value_repr(value, MAX_VALUE_REPR)
    except Exception as e:
        text, cut = "<%s object: its repr raised %s>" % (type(value).__name__, type(e).__name__), False
    return {"repr": text, "truncated": cut, "json": json_form(value, json_limit)}


#: The repr of a value too big to repr whole: sequences and mappings cut
#: to their first items, as a notebook's display cuts them.
_SHORT = reprlib.Repr()
_SHORT.maxlevel = 8
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 1000
_SHORT.maxfrozenset = _SHORT.maxdeque = _SHORT.maxarray = 1000
_SHORT.maxstring = _SHORT.maxother = MAX_VALUE_REPR
_SHORT.maxlong = 4000


def value_repr(value: Any, max_bytes: int) -> tuple[str, bool]:
    """bounded_repr, except that a value of builtin containers holding
    more than about 4 * max_bytes gets a shortened repr (reprlib's, first
    items then `...`; marked cut) instead of one as big as the value:
    a trailing `context` or a list of a million rows costs little. rlms's
    REPL never computes this repr, so it must stay cheap."""
    if _exceeds(value, 4 * max_bytes):
        data = _SHORT.repr(value).encode("utf-8", "replace")
        return data[:max_bytes].decode("utf-8", "ignore"), True
    return bounded_repr(value, max_bytes)


_CONTAINERS = (list, tuple, set, frozenset, dict, deque)


def _exceeds(value: Any, budget: int) -> bool:
    """Whether builtin containers in `value` hold more than `budget`
    (items and str/bytes lengths); stops as soon as they do. A str or
    bytes alone never counts: bounded_repr cuts it before its repr."""
    if not isinstance(value, _CONTAINERS):
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            budget -= len(item)
        elif isinstance(item, dict):
            budget -= len(item)
            if budget >= 0:
                stack.extend(dict.keys(item))
                stack.extend(dict.values(item))
        elif isinstance(item, _CONTAINERS):
            budget -= len(item)
            if budget >= 0:
                stack.extend(item)
        else:
            budget -= 8
        if budget < 0:
            return True
    return False


def json_form(value: Any, limit: int) -> Any:
    """`value` as plain JSON data (tuples as lists, keys as strings), or
    None when it has no JSON form within `limit` bytes. A bounded walk
    comes first, so a huge value is refused without being encoded."""
    try:
        if not _fits_json(value, limit):
            return None
        text = cjson.dumps(value)
        if len(text) > limit:
            return None
        # Read back: plain types only, so sending it runs no user code.
        return cjson.loads(text)
    except Exception:
        return None


def _fits_json(value: Any, limit: int) -> bool:
    """Whether `value` may have a JSON form of at most `limit` bytes, no
    deeper than MAX_VALUE_DEPTH, with 64-bit integers. Each item is
    charged the least JSON could take for it and items are visited
    lazily, so the walk stops within about `limit` items however big the
    value is (json.dumps has the last word on the real size)."""
    budget = limit
    stack: list[Any] = [iter((value,))]
    while stack:
        item = next(stack[-1], MISSING)
        if item is MISSING:
            stack.pop()
            continue
        if len(stack) > MAX_VALUE_DEPTH + 1:
            return False
        if isinstance(item, str):
            budget -= len(item) + 3
        elif item is None or isinstance(item, (bool, float)):
            budget -= 4
        elif isinstance(item, int):
            if not _INT_MIN <= item < _INT_END:
                return False
            budget -= 2
        elif isinstance(item, list):
            budget -= 2
            stack.append(list.__iter__(item))
        elif isinstance(item, tuple):
            budget -= 2
            stack.append(tuple.__iter__(item))
        elif isinstance(item, dict):
            budget -= 2
            for key in dict.keys(item):
                budget -= len(key) + 4 if isinstance(key, str) else 5
                if budget < 0:
                    return False
            stack.append(iter(dict.values(item)))
        else:
            return False
        if budget < 0:
            return False
    return True


def valid_name(name: Any) -> bool:
    """A name a Python function or parameter can have."""
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


_TOOL_CALL = "_rlm_tool_call"


def make_tool(name: str, params: list[str], call: Callable[[str, dict[str, Any]], Any]) -> AnyFunc:
    """A plain function `name(params...)` that sends its arguments, by
    parameter name, to `call`. Made from source so its signature is real:
    wrong arguments are the usual TypeError, help() shows the parameters.
    Its code carries the agent's file name, so tracebacks leave it out."""
    if not valid_name(name) or not all(valid_name(p) and p != _TOOL_CALL for p in params) \
            or len(set(params)) != len(params):
        raise ValueError("tool %r has an invalid name or parameters %r" % (name, params))
    mapping = ", ".join("%r: %s" % (p, p) for p in params)
    source = "def %s(%s):\n    return %s(%r, {%s})\n" % (name, ", ".join(params), _TOOL_CALL, name, mapping)
    scope: dict[str, Any] = {_TOOL_CALL: call}
    exec(compile(source, AGENT_FILE, "exec", dont_inherit=True), scope)
    fn: AnyFunc = scope[name]
    fn.__doc__ = "Calls the orchestrator's tool %r with (%s); returns its result." % (name, ", ".join(params))
    return fn
