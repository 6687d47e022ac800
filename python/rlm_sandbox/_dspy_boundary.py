"""What crosses between DSPy and the sandbox for rlm_sandbox.dspy: inputs
made JSON as DSPy's reference interpreters make them, host tools' signatures
(sent to the sandbox, which makes functions with them) and results, and
the constructor's checks LocalInterpreter makes too."""

from __future__ import annotations

import hashlib
import inspect
import json
import keyword
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from dspy.primitives.code_interpreter import CodeInterpreterError
from pydantic_core import PydanticSerializationError, to_jsonable_python

# -- inputs ------------------------------------------------------------------


@dataclass
class Input:
    """An input as it travels: its JSON form, text and fingerprint."""

    value: Any
    jsonable: Any
    text: str
    digest: str

    @property
    def size(self) -> int:
        """Bytes of its context file (text for a str, JSON otherwise)."""
        body = self.jsonable if isinstance(self.jsonable, str) else self.text
        return len(body.encode("utf-8", "surrogatepass"))

    @property
    def fits_a_file(self) -> bool:
        return isinstance(self.jsonable, (str, dict, list))


@dataclass
class Sent:
    """What the sandbox holds for an input name: its fingerprint, the
    value object (an immutable one is not serialized again), and the
    context file it came in, if any."""

    digest: str
    value: Any
    context: Optional[int] = None


_IMMUTABLE = (str, bytes, int, float, bool, type(None))


def prepare_input(name: str, value: Any) -> Input:
    """An input as JSON, as the reference PythonInterpreter converts it
    (pydantic, dataclasses, tuples and sets become JSON; anything else
    is an error, not its str())."""
    try:
        jsonable = to_jsonable_python(value)
        text = json.dumps(jsonable, ensure_ascii=False)
    except (PydanticSerializationError, TypeError, ValueError) as e:
        raise CodeInterpreterError(f"input {name!r}: a {type(value).__name__} cannot be sent as JSON ({e})") from None
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return Input(value, jsonable, text, digest)


def unchanged(sent: Optional[Sent], value: Any) -> bool:
    """The same immutable object as last time: no need to serialize it."""
    return sent is not None and isinstance(value, _IMMUTABLE) and value is sent.value


# -- tools -------------------------------------------------------------------

_KIND_NAMES = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}
# The key under which the sandbox's tool function sends the arguments
# given by position: not an identifier, so no keyword argument takes it.
POSITIONAL_KEY = "*args"


def tool_params(fn: Callable[..., Any]) -> List[List[Any]]:
    """[name, kind, has a default] per parameter, for the sandbox's
    function; a signature that cannot be read takes any arguments."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return [["args", "var_positional", False], ["kwargs", "var_keyword", False]]
    params = []
    for p in signature.parameters.values():
        variadic = p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        params.append([p.name, _KIND_NAMES[p.kind], p.default is not inspect.Parameter.empty and not variadic])
    return params


def tool_result(value: Any) -> Any:
    """A tool's value as JSON, converted as the reference does; str() of
    what has no JSON form (NaN included: the protocol refuses it)."""
    try:
        value = to_jsonable_python(value)
        json.dumps(value, allow_nan=False)
        return value
    except (PydanticSerializationError, TypeError, ValueError):
        return str(value)


def param_names(fn: Callable[..., Any]) -> List[str]:
    """The parameters `fn` takes by name (DSPy calls llm_query(prompt=))."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


async def awaited(awaitable: Any) -> Any:
    return await awaitable


def check_constructor_args(tools: Dict[str, Any], output_fields: Optional[List[Dict[str, Any]]]) -> None:
    """What LocalInterpreter refuses when it is made (ValueError): tool
    names that are not identifiers or are SUBMIT; output fields without
    unique identifier names, or that are not JSON."""
    invalid = [
        n for n in tools
        if not isinstance(n, str) or not n.isidentifier() or keyword.iskeyword(n) or n in ("SUBMIT", "__builtins__")
    ]
    if invalid:
        raise ValueError(f"tool names must be non-reserved Python identifiers; invalid names: {invalid!r}")
    if output_fields is None:
        return
    names = [f.get("name") if isinstance(f, dict) else None for f in output_fields]
    if any(not isinstance(n, str) or not n.isidentifier() or keyword.iskeyword(n) for n in names):
        raise ValueError(f"output field names must be non-keyword Python identifiers, not {names!r}")
    if len(names) != len(set(names)):
        raise ValueError(f"output field names must be unique: {names!r}")
    try:
        json.dumps(output_fields, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"output fields must be JSON-compatible: {e}") from e
