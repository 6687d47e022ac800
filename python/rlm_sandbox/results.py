"""What a cell and a one-shot run return: plain dataclasses over the
session protocol's `cell` object and the `run --json` result contract
(docs/PROTOCOL.md, README "Result contract"). Unknown fields stay in
`extra` so a newer binary never breaks an older client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

JSONDict = Dict[str, Any]
#: A value as JSON decodes it.
JSON = Union[None, bool, int, float, str, List[Any], Dict[str, Any]]


@dataclass(frozen=True)
class CellValue:
    """The value of a cell's trailing expression, when not None (as a
    notebook's execute result or DSPy's interpreters report it; never
    printed): `repr` (cut to 64 KiB, or a huge container's first items:
    `truncated` then), and `json`, the value as JSON data when it has a
    JSON form (json.dumps with allow_nan=False; tuples as lists, keys as
    strings) of at most 1 MiB with 64-bit integers, else None. Both
    have passed the egress filter: a secret or an echo of a context is
    redacted in the repr and in the JSON form's strings (the JSON form is
    None when it cannot be redacted in place)."""

    repr: str
    truncated: bool = False
    json: JSON = None

    @property
    def has_json(self) -> bool:
        """The value arrived in its JSON form (None is never a cell's value)."""
        return self.json is not None

    @classmethod
    def from_json(cls, obj: Any) -> Optional["CellValue"]:
        if obj is None:
            return None
        if not isinstance(obj, Mapping) or not isinstance(obj.get("repr"), str):
            raise ValueError(f"a cell value without a repr: {obj!r:.200}")
        return cls(obj["repr"], obj.get("truncated") is True, obj.get("json"))


@dataclass
class Cell:
    """One `exec`: its status (ok, error, timeout, oom, killed,
    output_limit, sandbox_error), filtered output, final answer, the value
    of its trailing expression (`value`, see CellValue) and the sub-calls
    it made (`calls`: one record per call, a batch being one, in the order
    the calls were answered)."""

    status: str
    stdout: str = ""
    stderr: str = ""
    final_answer: Optional[str] = None
    calls: List[JSONDict] = field(default_factory=list)
    findings: List[JSONDict] = field(default_factory=list)
    truncated: JSONDict = field(default_factory=dict)
    duration_ms: Optional[float] = None
    interrupted: bool = False
    session_dead: bool = False
    #: Why the session died in this cell, when it did.
    error: Optional[str] = None
    vars: Optional[List[JSONDict]] = None
    value: Optional[CellValue] = None
    #: How the cell's setup ended (ok, error, interrupted), when it had one
    #: that ran: its code ran only after an ok one.
    setup: Optional[str] = None
    extra: JSONDict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The code ran to its end without an exception."""
        return self.status == "ok"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Cell":
        fields = _fields(cls, obj, "cell")
        fields["value"] = CellValue.from_json(fields.get("value"))
        return cls(**fields)


@dataclass
class Result:
    """A one-shot `run`: the `run --json` contract."""

    status: str
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    truncated: JSONDict = field(default_factory=dict)
    findings: List[JSONDict] = field(default_factory=list)
    runtime: Optional[JSONDict] = None
    duration_ms: Optional[float] = None
    usage: Optional[JSONDict] = None
    error: Optional[JSONDict] = None
    extra: JSONDict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The code exited 0."""
        return self.status == "ok"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Result":
        return cls(**_fields(cls, obj, "result"))


def _fields(cls: type, obj: Mapping[str, Any], what: str) -> JSONDict:
    """The dataclass's fields from `obj`, the rest in `extra`."""
    names = {f for f in cls.__dataclass_fields__ if f != "extra"}  # type: ignore[attr-defined]
    known: JSONDict = {k: obj[k] for k in names if k in obj}
    if not isinstance(known.get("status"), str):
        raise ValueError(f"a {what} without a status: {dict(obj)!r:.200}")
    known["extra"] = {k: v for k, v in obj.items() if k not in names}
    return known
