"""What the agent leaves out of its start (every sandbox pays for what it
imports before `standby`) and that what it defers behaves as before:
JSON through the C codec, tracebacks' source lines through a deferred
linecache, cells compiled without the agent's own future statements."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import pytest

from frames import AGENT_ROOT, Agent

#: Modules the agent used to import at its start and no longer does: a
#: cell that needs one imports it, as a fresh `python3` would.
DEFERRED = ("re", "enum", "json", "typing", "traceback", "linecache", "tokenize", "ast", "signal", "textwrap",
            "threading", "functools", "collections", "queue")


def cjson() -> Any:
    """The agent's JSON module, from the source tree (the host's python3
    is the rootfs's 3.11)."""
    if str(AGENT_ROOT) not in sys.path:
        sys.path.insert(0, str(AGENT_ROOT))
    return importlib.import_module("_rlm_agent.cjson")


def test_a_started_agent_and_a_plain_cell_import_none_of_the_deferred_modules(ready: Agent) -> None:
    cell = ready.exec("import sys\nprint([m for m in %r if m in sys.modules])" % (DEFERRED,))
    assert (cell.status, cell.out) == ("ok", "[]\n"), cell.err
    # The baseline: the same check sees a module once a cell imports it.
    cell = ready.exec("import re\nprint([m for m in %r if m in sys.modules])" % (DEFERRED,))
    assert cell.status == "ok" and "'re'" in cell.out, cell.out


def test_the_first_error_shows_its_source_line(ready: Agent) -> None:
    cell = ready.exec("x = 1\nraise ValueError('first')")
    assert cell.status == "error"
    assert 'File "<cell 1>", line 2, in <module>' in cell.err and "raise ValueError('first')" in cell.err, cell.err


def test_user_tracebacks_show_lines_of_earlier_cells_and_of_the_importing_cell(ready: Agent) -> None:
    ready.exec("def f():\n    return 1 / 0")
    cell = ready.exec(
        "import traceback\n"
        "try:\n"
        "    f()  # the importing cell's own line\n"
        "except ZeroDivisionError:\n"
        "    traceback.print_exc()"
    )
    assert cell.status == "ok", cell.err
    assert "f()  # the importing cell's own line" in cell.err, cell.err
    assert "return 1 / 0" in cell.err, cell.err
    # Sources of cells after linecache's import go straight to its cache.
    ready.exec("def g():\n    raise KeyError('later')")
    cell = ready.exec("try:\n    g()\nexcept KeyError:\n    traceback.print_exc()")
    assert "raise KeyError('later')" in cell.err, cell.err


def test_a_source_put_by_user_side_code_reaches_linecache(ready: Agent) -> None:
    # rlm_sandbox.dspy's support module keeps its source this way.
    cell = ready.exec(
        "import _rlm_agent.sources as s\n"
        "s.shared().put('<support>', 'first line\\nsecond line\\n')\n"
        "import linecache\n"
        "print(linecache.getline('<support>', 2), end='')"
    )
    assert (cell.status, cell.out) == ("ok", "second line\n"), cell.err


def test_linecache_is_left_as_if_imported_directly(ready: Agent) -> None:
    cell = ready.exec(
        "import linecache, sys\n"
        "print(linecache.__loader__ is linecache.__spec__.loader,\n"
        "      type(linecache.__loader__).__module__,\n"
        "      [type(f).__module__ for f in sys.meta_path if 'rlm' in type(f).__module__])"
    )
    assert (cell.status, cell.out) == ("ok", "True _frozen_importlib_external []\n"), cell.err


def test_cells_do_not_inherit_the_agents_future_statements(ready: Agent) -> None:
    # The agent's modules use `from __future__ import annotations`; a cell
    # compiled with it would see its annotations as strings.
    cell = ready.exec("x: int = 1\nprint(__annotations__['x'] is int)")
    assert (cell.status, cell.out) == ("ok", "True\n"), cell.err
    cell = ready.exec("def f(a: int) -> str: ...\nf.__annotations__")
    assert cell.done["value"]["repr"] == "{'a': <class 'int'>, 'return': <class 'str'>}", cell.done
    cell = ready.exec("y: int = 2\nprint(__annotations__['y'] is int)", namespace="script")
    assert (cell.status, cell.out) == ("ok", "True\n"), cell.err


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, False, "é\u2028", "\x00\x1f\""], "n": {"k": [[], {}]}},
        [1e300, -0.0, 1 << 63, -(1 << 63), 0.1],
        "plain",
        {1: "int key", 2.5: "float key", True: "bool key", None: "none key"},
    ],
)
def test_cjson_writes_what_json_writes(value: Any) -> None:
    codec = cjson()
    assert codec.dumps(value) == json.dumps(value, ensure_ascii=False, allow_nan=False)
    assert codec.dumps(value, separators=(",", ":")) == json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )


def test_cjson_refuses_what_json_refuses_with_its_messages() -> None:
    codec = cjson()
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for bad in (float("nan"), float("inf"), cyclic):
        with pytest.raises(ValueError):
            codec.dumps(bad)
    with pytest.raises(TypeError, match="^Object of type object is not JSON serializable$"):
        codec.dumps({"x": object()})
    # A lone surrogate is written as json writes it (the wire replaces it
    # when encoding to UTF-8).
    assert codec.dumps("\ud800") == json.dumps("\ud800", ensure_ascii=False)


@pytest.mark.parametrize(
    "text",
    ['{"t":"exec","cell":3,"code":"print(1)"}', ' \n\t[1, 2.5e3, "x\\u00e9", null, true, false, {}] \r\n', '"s"',
     '-0', '1e400', '{"a": {"b": [[]]}}'],
)
def test_cjson_reads_what_json_reads(text: str) -> None:
    codec = cjson()
    assert codec.loads(text) == json.loads(text)
    assert codec.loads(text.encode()) == json.loads(text.encode())


@pytest.mark.parametrize(
    "text", ["", "  ", '{"a":1} x', "{'a': 1}", "[1,]", "NaN", "Infinity", '"\x01"', b"\xff\xfe"]
)
def test_cjson_refuses_what_is_not_one_strict_json_document(text: Any) -> None:
    with pytest.raises(ValueError):
        cjson().loads(text)


def test_cjson_takes_json_dumps_and_loads_own_settings_when_asked() -> None:
    codec = cjson()
    value = {"x": [float("nan"), float("inf"), "é"], "s": {3, 1}}

    def default(o: Any) -> Any:
        return sorted(o)

    assert codec.dumps(value, default=default, ensure_ascii=True, allow_nan=True) == json.dumps(value, default=default)
    text = '[NaN, Infinity, -Infinity, 1]'
    got, want = codec.loads(text, constants=True), json.loads(text)
    assert [repr(x) for x in got] == [repr(x) for x in want]
