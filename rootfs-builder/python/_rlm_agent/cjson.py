"""JSON through CPython's own C codec (`_json`), without importing `json`.

`import json` compiles the regular expressions of its pure-Python
fallbacks, which imports `re` and `enum`: about 5 ms of every sandbox's
start on the development VM (scripts/bench_agent_start.py), for
fallbacks the agent never takes. The C scanner and encoder below are the
ones `json.loads` / `json.dumps` use themselves, given the settings those
pass; user code that imports `json` gets the real module, unchanged.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

#: JSON's whitespace (RFC 8259), the only text allowed around a document.
_SPACE = " \t\n\r"


_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _no_constant(name: str) -> Any:
    """NaN and the infinities are not JSON: refused, as the host refuses them."""
    raise ValueError("%s is not JSON" % name)


class _Settings:
    """The attributes the C scanner reads from its context: json.loads's
    defaults, except that NaN/Infinity are refused unless asked for."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    def __init__(self, constants: bool) -> None:
        self.parse_constant = _CONSTANTS.__getitem__ if constants else _no_constant


_SCANNERS = {
    False: _json.make_scanner(_Settings(False)),  # type: ignore[arg-type]
    True: _json.make_scanner(_Settings(True)),  # type: ignore[arg-type]
}


def loads(data: bytes | str, constants: bool = False) -> Any:
    """One JSON document, as json.loads reads it (UTF-8 bytes or str);
    ValueError when it is not exactly one document. NaN and the
    infinities only with `constants` (json.loads takes them)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _SCANNERS[constants](text, start)
    except StopIteration as e:
        raise ValueError("expecting a value at character %d" % e.value) from None
    if text[end:].strip(_SPACE):
        raise ValueError("extra data at character %d" % end)
    return value


def _unencodable(value: object) -> Any:
    """What json.JSONEncoder.default does: refuse, naming the type."""
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def dumps(
    value: Any,
    separators: tuple[str, str] = (", ", ": "),
    default: Optional[Callable[[Any], Any]] = None,
    ensure_ascii: bool = False,
    allow_nan: bool = False,
) -> str:
    """json.dumps(value, separators=..., default=..., ensure_ascii=...,
    allow_nan=...), with the agent's defaults (UTF-8 text, no NaN):
    ValueError for NaN/infinities unless allowed or for a cycle,
    TypeError for what JSON cannot hold and `default` does not turn into
    something it can."""
    item, key = separators
    escape = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    # A new encoder per call: its circular-reference markers are its own,
    # so threads encoding at once do not share them.
    encoder = _json.make_encoder(
        {}, default or _unencodable, escape, None, key, item, False, False, allow_nan
    )
    return "".join(encoder(value, 0))
