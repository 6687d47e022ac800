"""The client against real sandboxes, on both runtimes."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import rlm_sandbox
from rlm_sandbox import Session, SessionDead

from conftest import CHECKOUT, assert_clean


def test_state_persists_across_cells(settings: dict) -> None:
    with Session(**settings) as s:
        assert s.exec("x = 6 * 7").ok
        cell = s.exec("print(x + 1)")
        assert (cell.status, cell.stdout) == ("ok", "43\n")
        assert [v["name"] for v in s.vars()] == ["x"]
        assert s.get("x") == "42"
        with pytest.raises(KeyError):
            s.get("nope")
        s.reset()
        assert s.exec("print('x' in globals())").stdout == "False\n"


def test_a_setup_and_its_code_are_one_cell(settings: dict) -> None:
    """`exec`'s setup runs before the code in the same cell; the code runs
    only after an ok setup, `keep` keeps what the setup bound. The session's
    ready lists the sandbox's own names (what a client must not rebind)."""
    with Session(**settings) as s:
        assert {"answer", "llm_query", "FINAL_VAR"} <= set(s.ready["names"])
        cell = s.exec("q = q.upper()\nprint(q)", setup="q = 'input'\nprint('set up')", keep=["q"])
        assert (cell.status, cell.setup, cell.stdout) == ("ok", "ok", "set up\nINPUT\n")
        assert s.exec("print(q)", restore=["q"]).stdout == "input\n"
        cell = s.exec("ran = True", setup="raise KeyError('k')")
        assert (cell.status, cell.setup) == ("error", "error") and "KeyError" in cell.stderr
        cell = s.exec("print('ran' in globals())")
        assert (cell.stdout, cell.setup) == ("False\n", None)
        with pytest.raises(ValueError, match='"setup" must be a string of code or null, got a number'):
            s._call("exec", code="1", setup=1)
        with pytest.raises(ValueError, match='"setup" do not apply to "namespace": "script"'):
            s._call("exec", code="1", setup="x = 1", namespace="script")


def test_a_requester_reads_its_own_response(settings: dict) -> None:
    """Back-to-back requests never wake the client's reader thread: the
    requesting thread reads its response itself (a thread hand-off less per
    request). Without that, every response wakes the reader (100 cells, at
    least 100 context switches); now it looks every READER_RESUME (50 ms)
    whether requests paused, a few switches each time."""
    with Session(**settings) as s:
        s.exec("x = 0")
        reader = next(t for t in threading.enumerate() if t.name == "rlm-sandbox-stdout")

        def switches() -> int:
            with open(f"/proc/self/task/{reader.native_id}/status") as f:
                return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)

        before = switches()
        for _ in range(100):
            assert s.exec("x += 1").ok
        assert switches() - before < 60
        assert s.exec("print(x)").stdout == "100\n"


def test_contexts_from_a_path_a_str_and_a_dict(settings: dict, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("from a file\n")
    with Session(contexts=[path, "from a str", {"k": [1, 2]}], **settings) as s:
        cell = s.exec("print(repr(context), repr(context_1), context_2['k'], ctx.size)")
        assert cell.stdout == "'from a file\\n' 'from a str' [1, 2] 12\n", cell
        added = s.add_context(["a", "list"])
        assert added["name"] == "context_3" and added["format"] == "json"
        assert s.exec("print(context_3[1])").stdout == "list\n"
        # The client's temporary files are gone once the session has them.
        temps = [c["host_path"] for c in s.ready["contexts"][1:]] + [added["host_path"]]
        assert not any(os.path.exists(p) for p in temps), temps
        assert s.exec("print(context_1)").stdout == "from a str\n"
    with pytest.raises(TypeError, match="pathlib.Path"):
        Session(contexts=[42], **settings)


def test_a_200_mb_context_is_searched_in_place(settings: dict, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    line = b"filler line of the haystack\n"
    with open(big, "wb") as f:
        f.write(line * (200 * 1024 * 1024 // len(line)))
        f.write(b"the NEEDLE is here\n")
    with Session(contexts=[big], memory="256m", **settings) as s:
        cell = s.exec(
            "hits = ctx.search('NEEDLE')\n"
            "import json\n"
            "print(json.dumps([ctx.size, len(hits), ctx.snippet(hits[0]['offset'], 8), context]))"
        )
        assert cell.status == "ok", cell
        size, count, snippet, note = json.loads(cell.stdout)
        assert (size, count) == (big.stat().st_size, 1)
        assert "NEEDLE" in snippet
        # Above the load limit `context` is a short note pointing at ctx.
        assert "ctx" in note and len(note) < 1000


def test_llm_query_batched_runs_concurrently_on_the_host(settings: dict) -> None:
    active, peak = [0], [0]
    lock = threading.Lock()
    # Each answer waits until all eight prompts are in flight at once: run
    # one after another, the first would wait alone and the barrier break
    # (no clock involved, so a slow machine cannot fail it).
    all_in_flight = threading.Barrier(8, timeout=60)

    def llm(prompt: str, model: object) -> str:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        all_in_flight.wait()
        with lock:
            active[0] -= 1
        return prompt[::-1]

    with Session(llm=llm, **settings) as s:
        cell = s.exec("r = llm_query_batched(['ab%d' % i for i in range(8)])\nprint(r)")
    assert cell.stdout == repr([f"{i}ba" for i in range(8)]) + "\n", cell
    assert not all_in_flight.broken
    assert peak[0] == 8
    assert [c["kind"] for c in cell.calls] == ["llm_query"] and cell.calls[0]["prompts"] == 8


def test_tools_and_failing_callables(settings: dict) -> None:
    def lookup(key: str, default: str) -> str:
        return {"a": "alpha"}.get(key, default)

    def broken(prompt: str, model: object) -> str:
        raise RuntimeError("model unavailable")

    with Session(llm=broken, tools={"lookup": lookup, "fail": lambda: 1 / 0}, **settings) as s:
        cell = s.exec("print(lookup('a', '?'), lookup(key='b', default='?'))")
        assert cell.stdout == "alpha ?\n", cell
        cell = s.exec("print(llm_query('hi'))\nprint(llm_query_batched(['a', 'b']))\nprint(fail())")
        assert cell.status == "ok", cell
        lines = cell.stdout.splitlines()
        assert lines[0] == "Error: RuntimeError: model unavailable"
        assert lines[1] == repr(["Error: RuntimeError: model unavailable"] * 2)
        assert lines[2] == "Error: ZeroDivisionError: division by zero"
        assert s.exec("print('alive')").stdout == "alive\n"


def test_rlm_callable_answers_rlm_query(settings: dict) -> None:
    with Session(llm=lambda p, m: "llm:" + p, rlm=lambda p, m: f"rlm:{p}:{m}", **settings) as s:
        cell = s.exec("print(rlm_query('q', model='m2'), llm_query('p'))")
    assert cell.stdout == "rlm:q:m2 llm:p\n", cell
    assert [c["kind"] for c in cell.calls] == ["rlm_query", "llm_query"]


def test_a_cell_past_its_timeout_is_interrupted(settings: dict) -> None:
    with Session(**settings) as s:
        cell = s.exec("import time\nwhile True: time.sleep(0.01)", timeout=1)
        assert cell.status == "timeout" and cell.interrupted, cell
        assert "KeyboardInterrupt" in cell.stderr
        assert s.exec("print('next')").stdout == "next\n"


def test_out_of_memory_ends_the_session(settings: dict, state_dir: Path) -> None:
    s = Session(memory="128m", **settings)
    pid = s.pid
    cell = s.exec("x = bytearray(1024 * 1024 * 1024)")
    assert cell.status == "oom" and cell.session_dead, cell
    with pytest.raises(SessionDead, match="oom"):
        s.exec("print(1)")
    s.close()
    assert_clean(state_dir, pid)


def test_nothing_left_after_close_or_an_exception(settings: dict, state_dir: Path) -> None:
    s = Session(contexts=["a str context"], **settings)
    pid = s.pid
    s.exec("print(1)")
    s.close()
    s.close()  # twice is harmless
    assert_clean(state_dir, pid)
    with pytest.raises(SessionDead):
        s.exec("print(1)")
    with pytest.raises(ZeroDivisionError):
        with Session(**settings) as s2:
            pid = s2.pid
            1 / 0
    assert_clean(state_dir, pid)


def test_a_dropped_session_is_garbage_collected_and_removed(settings: dict, state_dir: Path) -> None:
    s = Session(llm=lambda p, m: p, tools={"f": lambda: 1}, **settings)
    s.exec("print(llm_query('x'), f())")
    pid = s.pid
    del s
    gc.collect()
    assert_clean(state_dir, pid)


def test_nothing_left_after_the_python_process_is_killed(settings: dict, state_dir: Path, tmp_path: Path) -> None:
    # The cell is held in an llm_query the killed process never answers:
    # its "in flight" line is the event that the cell is running.
    script = textwrap.dedent(
        f"""
        import json, sys, threading
        sys.path.insert(0, {str(CHECKOUT / 'python')!r})
        import rlm_sandbox
        def llm(prompt, model):
            print(json.dumps({{"in_flight": prompt}}), flush=True)
            threading.Event().wait()
        s = rlm_sandbox.Session(contexts=["secret-free text"], llm=llm, **{json.dumps(settings)})
        print(json.dumps({{"pid": s.pid, "temp": s.ready["contexts"][0]["host_path"]}}), flush=True)
        s.exec("llm_query('held')")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout is not None
    info = json.loads(child.stdout.readline())
    assert json.loads(child.stdout.readline()) == {"in_flight": "held"}
    # The client's private directory exists while it runs (its file was
    # released once the session took it).
    private = os.path.dirname(info["temp"])
    assert os.path.basename(private).startswith("rlm-sandbox-ctx-") and os.path.isdir(private)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # The session sees the end of its input, removes its sandbox and the
    # client's directory, and exits.
    assert_clean(state_dir, info["pid"], wait=60)
    assert not os.path.exists(info["temp"])
    assert not os.path.exists(private), f"{private} outlived the SIGKILLed client"


def test_run_one_shot(settings: dict) -> None:
    result = rlm_sandbox.run("import sys\nprint(6 * 7)\nsys.exit(3)", **settings)
    assert (result.status, result.exit_code, result.stdout) == ("error", 3, "42\n")
    assert result.runtime and result.runtime["name"] == settings["runtime"]
    with pytest.raises(ValueError, match="memory"):
        rlm_sandbox.run("print(1)", memory="lots", **settings)


def test_errors_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="accepted: .*memory"):
        Session(memroy="1g")
    monkeypatch.setenv("RLM_SANDBOX_BIN", str(tmp_path / "missing"))
    with pytest.raises(rlm_sandbox.SandboxUnavailable, match="RLM_SANDBOX_BIN"):
        Session()


def test_a_rootfs_that_cannot_run_is_sandbox_unavailable(settings: dict, tmp_path: Path) -> None:
    with pytest.raises(rlm_sandbox.SandboxUnavailable) as e:
        Session(rootfs=str(tmp_path), **settings)
    assert "rootfs build" in str(e.value)
