"""What a cell and a one-shot run return: plain dataclasses over the
session protocol's `cell` object and the `run --json` result contract
(docs/PROTOCOL.md, README "Result contract"). Unknown fields stay in
`extra` so a newer binary never breaks an older client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

JSONDict = Dict[str, Any]


@dataclass
class Cell:
    """One `exec`: its status (ok, error, timeout, oom, killed,
    output_limit, sandbox_error), filtered output, final answer and the
    sub-calls it made (`calls`: one record per call, a batch being one,
    in the order the calls were answered)."""

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
    error: Optional[JSONDict] = None
    vars: Optional[List[JSONDict]] = None
    extra: JSONDict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The code ran to its end without an exception."""
        return self.status == "ok"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Cell":
        return cls(**_fields(cls, obj, "cell"))


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
