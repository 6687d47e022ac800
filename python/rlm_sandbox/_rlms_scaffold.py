"""The sandbox side of `RlmSandboxREPL`'s scaffold, as the code it sends,
and the host side of what `REPLResult.locals` shows.

rlms's environments (LocalREPL, DockerREPL) put back, after every cell,
the names the code must not lose: `history` (the running compaction
list, or `history_0`) and the custom tools. The sandbox's agent already
restores its own names (`context*`, `llm_query*`, `rlm_query*`,
`SHOW_VARS`, `answer`, host tools); what rlms adds lives in one private
global, `_rlm_env`, and one short cell (the epilogue) puts it back. The
code reaches builtins through `__builtins__`, so a model that rebound
`dict` or `isinstance` does not break it."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Optional

#: Names LocalREPL restores itself that the agent does not define; a
#: code-string tool's namespace gets the agent's functions of these names.
API_NAMES = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "SHOW_VARS")

#: Types whose values rlms's prompt formatter lists among "REPL
#: variables" (`isinstance(value, (str, int, float, bool, list, dict,
#: tuple))`), by type name: the builtins and the common subclasses.
LISTED_TYPES = frozenset(
    {"str", "int", "float", "bool", "list", "dict", "tuple", "defaultdict", "OrderedDict", "Counter", "float64", "str_"}
)

# Makes `_rlm_env` (a private dict: the compaction list, the code tools
# and their namespace) exist; every piece below starts with it.
_ENSURE = """\
_rlm_b = __builtins__
_rlm_g = _rlm_b.globals()
if not _rlm_b.isinstance(_rlm_g.get("_rlm_env"), _rlm_b.dict):
    _rlm_g["_rlm_env"] = {"history": [], "tools": {}, "ns": {}}
_rlm_e = _rlm_g["_rlm_env"]
if not _rlm_b.isinstance(_rlm_e.get("history"), _rlm_b.list):
    _rlm_e["history"] = []
"""

_CLEAN = 'for _rlm_n in ("_rlm_b", "_rlm_e", "_rlm_n"):\n    _rlm_g.pop(_rlm_n, None)\ndel _rlm_g\n'


def epilogue(compaction: bool) -> str:
    """The cell run after each of the model's: the code tools rebound,
    `history` the compaction list (compaction) or `history_0`, as
    LocalREPL's `_restore_scaffold` does."""
    history = (
        '_rlm_g["history"] = _rlm_e["history"]\n'
        if compaction
        else 'if "history_0" in _rlm_g:\n    _rlm_g["history"] = _rlm_g["history_0"]\n'
    )
    tools = 'for _rlm_n in _rlm_b.list(_rlm_e.get("tools") or {}):\n    _rlm_g[_rlm_n] = _rlm_e["tools"][_rlm_n]\n'
    return _ENSURE + tools + history + _CLEAN


def append_entry(entry: Any) -> str:
    """Appends a compaction entry (a JSON copy) to the running list and
    makes `history` that list again, whatever the code bound to it."""
    text = json.dumps(entry, ensure_ascii=False)
    return (
        _ENSURE
        + f'_rlm_e["history"].append(__import__("json").loads({text!r}))\n'
        + '_rlm_g["history"] = _rlm_e["history"]\n'
        + _CLEAN
    )


def is_code_tool(value: Any) -> bool:
    """A custom tool whose value is Python source, by DockerREPL's rule:
    a str starting with `def `, `class ` or `lambda`, or of several lines."""
    if not isinstance(value, str):
        return False
    stripped = value.strip()
    return stripped.startswith(("def ", "class ", "lambda")) or "\n" in value


def define_tools(tools: Mapping[str, str]) -> str:
    """Runs each code-string tool in the sandbox, in one namespace of their
    own (the agent's query functions in it, as DockerREPL's script has
    them), and binds the name it defines. A source that defines no such
    name is an error naming the tool."""
    lines = [_ENSURE, '_rlm_ns = _rlm_e["ns"]\n']
    lines.append('_rlm_ns.update(__builtins__=_rlm_b, __name__="__main__")\n')
    lines.append(f"for _rlm_n in {list(API_NAMES)!r}:\n    _rlm_ns[_rlm_n] = _rlm_g[_rlm_n]\n")
    for name, source in tools.items():
        lines.append(f"_rlm_b.exec(_rlm_b.compile({source!r}, {f'<custom tool {name}>'!r}, 'exec'), _rlm_ns)\n")
        lines.append(
            f"if {name!r} not in _rlm_ns:\n"
            f"    raise NameError({f'custom tool {name!r}: its code defines no {name!r}'!r})\n"
            f'_rlm_e["tools"][{name!r}] = _rlm_g[{name!r}] = _rlm_ns[{name!r}]\n'
        )
    lines.append("del _rlm_ns\n" + _CLEAN)
    return "".join(lines)


class SandboxObject:
    """`REPLResult.locals`' stand-in for a value that stays in the sandbox
    and that rlms would not list among "REPL variables" (a function, a
    module, an instance): not a str, so its prompt formatter leaves it
    out as it leaves out the real object. Its repr is `<type>`."""

    __slots__ = ("type_name", "size")

    def __init__(self, type_name: str, size: Optional[int]) -> None:
        self.type_name = type_name
        self.size = size

    def __repr__(self) -> str:
        return f"<{self.type_name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SandboxObject) and (other.type_name, other.size) == (self.type_name, self.size)

    def __hash__(self) -> int:
        return hash((self.type_name, self.size))


def stand_in(type_name: str, size: Optional[int] = None) -> Any:
    """`"<type>"` for the types rlms lists (a str, so listed as the value
    would be), a SandboxObject for the others."""
    return f"<{type_name}>" if type_name in LISTED_TYPES else SandboxObject(type_name, size)


class LocalsView:
    """The names of `REPLResult.locals` in LocalREPL's order: `answer`,
    the data tools, `history` (compaction), then each name where it first
    appeared (contexts when added, user globals in the order they were
    made); a name keeps its place when rebound, as in a dict."""

    def __init__(self) -> None:
        self._order: Dict[str, None] = {"answer": None}
        self._scaffold: Dict[str, Any] = {"answer": "<dict>"}
        self._hidden: set[str] = set()

    def hide(self, names: Iterable[str]) -> None:
        """Names never shown (the tools: LocalREPL keeps callables in its
        globals, DockerREPL code tools in its script's)."""
        self._hidden.update(names)

    def add_scaffold(self, name: str, value: Any) -> None:
        self._order.setdefault(name)
        self._scaffold[name] = value

    def see(self, names: Iterable[str]) -> None:
        for name in names:
            self._order.setdefault(name)

    def build(self, user_vars: List[Dict[str, Any]]) -> Dict[str, Any]:
        """`locals` for a cell whose user globals are `user_vars`."""
        present: Dict[str, Any] = dict(self._scaffold)
        for v in user_vars:
            name = v.get("name")
            if isinstance(name, str):
                size = v.get("size")
                present[name] = stand_in(str(v.get("type")), size if isinstance(size, int) else None)
        self.see(present)
        return {n: present[n] for n in self._order if n in present and n not in self._hidden}
