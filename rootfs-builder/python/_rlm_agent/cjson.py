"""JSON through CPython's own C codec (`_json`), without importing `json`.

`import json` compiles the regular expressions of its pure-Python
fallbacks, which imports `re` and `enum`: about 5 ms of every sandbox's
start on the development VM (a third of the agent's start-up), for
fallbacks the agent never takes. The C scanner and encoder below are the
ones `json.loads` / `json.dumps` use themselves, given the settings those
pass; user code that imports `json` gets the real module, unchanged.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: JSON's whitespace (RFC 8259), the only text allowed around a document.
_SPACE = " \t\n\r"


def _no_constant(name: str) -> Any:
    """NaN and the infinities are not JSON: refused, as the host refuses them."""
    raise ValueError("%s is not JSON" % name)


class _Settings:
    """The attributes the C scanner reads from its context: json.loads's
    defaults, except that NaN/Infinity are refused."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)


_scan = _json.make_scanner(_Settings())  # type: ignore[arg-type]


def loads(data: bytes | str) -> Any:
    """One JSON document, as json.loads reads it (UTF-8 bytes or str);
    ValueError when it is not exactly one document."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError("expecting a value at character %d" % e.value) from None
    if text[end:].strip(_SPACE):
        raise ValueError("extra data at character %d" % end)
    return value


def _unencodable(value: object) -> Any:
    """What json.JSONEncoder.default does: refuse, naming the type."""
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _encoder(separators: tuple[str, str]) -> _json.make_encoder:
    """json.dumps(ensure_ascii=False, allow_nan=False, separators=...)'s
    C encoder (markers: circular references are refused, as there)."""
    item, key = separators
    return _json.make_encoder(
        {}, _unencodable, _json.encode_basestring, None, key, item, False, False, False
    )


def dumps(value: Any, separators: tuple[str, str] = (", ", ": ")) -> str:
    """json.dumps(value, ensure_ascii=False, allow_nan=False, separators=...):
    ValueError for NaN/infinities or a cycle, TypeError for what JSON
    cannot hold."""
    # A new encoder per call: its circular-reference markers are its own,
    # so threads encoding at once do not share them.
    return "".join(_encoder(separators)(value, 0))
