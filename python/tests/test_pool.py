"""rlm_sandbox.Pool on both runtimes: a claim never sees an earlier
claim's files, variables, threads or contexts; claims draw fresh RNG
state; the pool refills after a burst; a claim of another shape starts
cold and gets its own limits; nothing is left after close, an exception,
garbage collection or a SIGKILL of the pool's owner (and `gc` finds
nothing)."""

from __future__ import annotations

import copy
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

import rlm_sandbox
from rlm_sandbox import Pool, SandboxUnavailable, find_binary

from conftest import CHECKOUT, assert_clean

# What a claim can see of an earlier one: a file in /tmp, a global, a
# thread, a context.
LOOK = """
import glob, threading
found = []
if glob.glob('/tmp/pool-marker-*'): found.append('file')
if 'pool_marker_var' in globals(): found.append('variable')
if any(t.name == 'pool-marker-thread' for t in threading.enumerate()): found.append('thread')
if 'context' in globals() or glob.glob('/rlm/contexts/*'): found.append('context')
print(found)
"""
MARK = """
import threading
open('/tmp/pool-marker-file', 'w').write('x')
pool_marker_var = 1
_stop = threading.Event()
threading.Thread(target=_stop.wait, name='pool-marker-thread', daemon=True).start()
"""


def standby_pids(pool: Pool) -> List[int]:
    """The pids of the standbys the pool holds now (ready ones)."""
    keeper = pool._keeper
    assert keeper is not None
    with keeper.cond:
        return [p.pid for p in keeper.ready]


def assert_gc_finds_nothing(settings: Dict[str, Any]) -> None:
    out = subprocess.run(
        [find_binary(), "gc", "--json", "--runtime", settings["runtime"], "--state-dir", settings["state_dir"]],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # `rlms-bundle-<runtime>` is the state directory's shared bundle
    # cache, which gc also removes: not a sandbox. gc lists as in use the
    # cgroups of live drivers with other state directories (other
    # processes on this host): only runs of this state directory are ours.
    ours = {n for n in os.listdir(settings["state_dir"]) if n.startswith("rlms-")}
    removed = [i for i in report["removed"] if not i.startswith("rlms-bundle-")]
    in_use = [i for i in report["in_use"] if i in ours]
    assert removed == [] and in_use == [] and report["killed_processes"] == 0, report


def test_a_claim_sees_nothing_of_earlier_claims(settings: Dict[str, Any]) -> None:
    with Pool(2, **settings) as pool:
        assert pool.wait_full()
        with pool.session(contexts=["pool-marker-context"]) as first:
            assert first.ready["standby"] is True
            assert first.exec(MARK).ok
            # The negative control: the look finds all four in the claim that made them.
            assert first.exec(LOOK).stdout == "['file', 'variable', 'thread', 'context']\n"
        for _ in range(20):
            assert pool.wait_full()
            with pool.session() as later:
                assert later.ready["standby"] is True  # pooled, not a cold start
                cell = later.exec(LOOK)
                assert cell.stdout == "[]\n", cell


def test_rng_state_differs_between_claims(settings: Dict[str, Any]) -> None:
    code = "import os, random; print(os.urandom(16).hex(), random.random(), hash('x'))"
    seen = []
    with Pool(2, **settings) as pool:
        for _ in range(2):
            assert pool.wait_full()
            with pool.session() as s:
                assert s.ready["standby"] is True
                seen.append(s.exec(code).stdout.split())
    (urandom_a, random_a, hash_a), (urandom_b, random_b, hash_b) = seen
    assert urandom_a != urandom_b and random_a != random_b and hash_a != hash_b, seen


def test_a_hundred_quick_claims_then_the_pool_is_full_again(settings: Dict[str, Any]) -> None:
    with Pool(2, **settings) as pool:
        assert pool.wait_full()
        pooled = 0
        for i in range(100):
            with pool.session() as s:
                pooled += s.ready["standby"] is True
                assert s.exec(f"print({i} * 2)").stdout == f"{i * 2}\n"
        assert pool.wait_full()  # an event the pool signals, no sleep
        assert pool.ready_count == pool.size == 2
        assert pooled >= 2, "the first claims found standbys"
        assert pool.started >= 2 + pooled - 2


def test_a_claim_of_another_shape_starts_cold_with_its_own_limits(settings: Dict[str, Any]) -> None:
    with Pool(1, memory="256m", **settings) as pool:
        assert pool.wait_full()
        with pool.session(memory="300m") as cold:
            assert cold.ready["standby"] is False
            assert cold.ready["limits"]["memory_bytes"] == 300 * 1024 * 1024
            assert cold.exec("print(6 * 7)").stdout == "42\n"
        assert pool.ready_count == 1, "the cold claim took no standby"
        with pool.session(memory="256m", max_llm_calls=3) as pooled:
            assert pooled.ready["standby"] is True
            assert pooled.ready["limits"]["memory_bytes"] == 256 * 1024 * 1024
            assert pooled.ready["limits"]["max_calls"] == 3


def test_close_removes_every_standby(settings: Dict[str, Any]) -> None:
    pool = Pool(2, **settings)
    assert pool.wait_full()
    pids = standby_pids(pool)
    assert len(pids) == 2
    pool.close()
    for pid in pids:
        assert_clean(Path(settings["state_dir"]), pid)
    assert_gc_finds_nothing(settings)
    with pytest.raises(ValueError, match="closed"):
        pool.session()


def test_an_exception_in_the_with_block_removes_every_standby(settings: Dict[str, Any]) -> None:
    pids: List[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        with Pool(2, **settings) as pool:
            assert pool.wait_full()
            pids = standby_pids(pool)
            raise RuntimeError("boom")
    assert len(pids) == 2
    for pid in pids:
        assert_clean(Path(settings["state_dir"]), pid)
    assert_gc_finds_nothing(settings)


def test_garbage_collection_removes_every_standby(settings: Dict[str, Any]) -> None:
    pool = Pool(2, **settings)
    assert pool.wait_full()
    pids = standby_pids(pool)
    del pool
    gc.collect()
    for pid in pids:
        assert_clean(Path(settings["state_dir"]), pid)
    assert_gc_finds_nothing(settings)


OWNER = """
import sys, rlm_sandbox
pool = rlm_sandbox.Pool(2, runtime=sys.argv[1], state_dir=sys.argv[2])
assert pool.wait_full()
with pool._keeper.cond:
    print(' '.join(str(p.pid) for p in pool._keeper.ready), flush=True)
sys.stdin.read()
"""


def test_sigkill_of_the_owner_removes_every_standby(settings: Dict[str, Any]) -> None:
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT / "python"), RLM_SANDBOX_BIN=find_binary())
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, settings["runtime"], settings["state_dir"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert owner.stdout is not None
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert len(pids) == 2, "the owner printed its standbys"
    for pid in pids:
        assert Path(f"/proc/{pid}").exists()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    for pid in pids:
        assert_clean(Path(settings["state_dir"]), pid)
    assert_gc_finds_nothing(settings)


def test_settings_are_checked_and_a_pool_stays_in_its_process(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="max_llm_calls belong to each claim"):
        Pool(1, max_llm_calls=3)
    with pytest.raises(TypeError, match="unknown setting"):
        Pool(1, memroy="1g")
    with pytest.raises(ValueError, match="expected a number >= 1"):
        Pool(0)
    os.environ["RLM_POOL_SIZE"] = "two"
    try:
        with pytest.raises(ValueError, match="RLM_POOL_SIZE='two' is not a number"):
            Pool()
    finally:
        del os.environ["RLM_POOL_SIZE"]
    # A pool that cannot start anything: its first start fails, and
    # wait_full says why (the binary's own error) rather than hanging.
    with Pool(1, runtime="no-such-runtime", state_dir=str(tmp_path)) as pool:
        with pytest.raises(rlm_sandbox.SandboxUnavailable, match="runtime"):
            pool.wait_full()
        with pytest.raises(TypeError, match="cannot be pickled or sent to another process"):
            pickle.dumps(pool)
        # Within the process a copy is the pool (dspy deep-copies modules).
        assert copy.copy(pool) is pool and copy.deepcopy([pool])[0] is pool


def test_dspy_rlm_gets_a_pooled_interpreter_per_task(settings: Dict[str, Any]) -> None:
    import dspy
    from dspy.utils.dummies import DummyLM

    from rlm_sandbox.dspy import SandboxInterpreter
    from test_dspy import ROOT_STEPS

    made: List[SandboxInterpreter] = []
    with Pool(2, **settings) as pool:
        assert pool.wait_full()
        factory = SandboxInterpreter.factory(pool=pool)

        def counting() -> SandboxInterpreter:
            made.append(factory())
            return made[-1]

        for _ in range(2):  # two tasks: two claims, each shut down after
            sub_lm = DummyLM({"Label: alpha": {"label": "ALPHA"}, "a fruit: beta": {"kind": "mango"}})
            rlm = dspy.RLM("context -> answer: str, count: int", max_iters=4, sub_lm=sub_lm, interpreter_factory=counting)
            with dspy.context(lm=DummyLM(ROOT_STEPS)):
                result = rlm(context="alpha beta gamma")
            assert (result.answer, result.count) == ("ALPHA/mango", 3)
        assert len(made) == 2 and made[0].pid != made[1].pid
        for interpreter in made:
            assert interpreter.session is None  # RLM shut it down
            assert interpreter.pid is not None
        # The sandboxes were the pool's standbys, not cold starts.
        assert pool.started >= 2
        with pytest.raises(TypeError, match="takes no binary"):
            SandboxInterpreter(pool=pool, binary="/bin/false")
    # Each was removed off the task's path; the pool's close waited for it.
    for interpreter in made:
        assert interpreter.pid is not None
        assert_clean(Path(settings["state_dir"]), interpreter.pid)


def test_a_pooled_interpreters_shutdown_hands_its_sandbox_back_and_close_waits_for_it(
    settings: Dict[str, Any],
) -> None:
    """SandboxInterpreter.shutdown (once per dspy.RLM task) and
    RlmSandboxREPL.cleanup (once per rlms completion) return before the
    pooled sandbox is removed: it is handed to the pool (its input closed,
    the session removes it on its own), whose close waits for it."""
    from rlm_sandbox.dspy import SandboxInterpreter
    from rlm_sandbox.rlms import RlmSandboxREPL

    with Pool(2, **settings) as pool:
        assert pool.wait_full()
        keeper = pool._keeper
        assert keeper is not None
        interpreter = SandboxInterpreter(pool=pool)
        assert interpreter.execute("print(40 + 2)") == "42"
        repl = RlmSandboxREPL(pool=pool)
        assert repl.execute_code("print(6 * 7)").stdout == "42\n"
        pids = [interpreter.pid, repl.session.pid if repl.session else None]
        # Each listed once the pool's thread retired it (its input closed
        # there, off the caller's path): a retired session is reaped only
        # at the next retire or at close.
        interpreter.shutdown()
        assert keeper.wait_retired(60)
        assert pids[0] in [process.pid for process, _ in keeper.retiring]
        repl.cleanup()
        assert keeper.wait_retired(60)
        assert pids[1] in [process.pid for process, _ in keeper.retiring]
    for pid in pids:
        assert pid is not None
        assert_clean(Path(settings["state_dir"]), pid)
    assert_gc_finds_nothing(settings)


def test_rlms_gets_a_pooled_environment_through_environment_kwargs(settings: Dict[str, Any]) -> None:
    from rlm_sandbox.rlms import RlmSandboxREPL
    from scripted_llm import ScriptedLLM
    from test_rlms import FIRST_TURN, _rlm, _root, _sub

    with Pool(2, **settings) as pool:
        assert pool.wait_full()
        with ScriptedLLM({"root": _root(list(FIRST_TURN)), "sub": _sub}) as llm:
            rlm = _rlm(llm, {"pool": pool})
            result = rlm.completion("The fruit is a mango, from the orchard.")
        assert result.response == "SUB(Name the fruit in: The fruit is a mango, from the)|SUB(one)|SUB(two)|39"
        # Directly: the environment's session is a claimed standby.
        env = RlmSandboxREPL(context_payload="pooled context", pool=pool)
        try:
            assert env.session is not None and env.session.ready["standby"] is True
            assert env.execute_code("print(context)").stdout == "pooled context\n"
        finally:
            pid = env.session.pid if env.session is not None else None
            env.cleanup()
        assert pid is not None
        assert_clean(Path(settings["state_dir"]), pid)


SNIPPETS = [
    "print(40 + 2)",
    "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
    "raise ValueError('boom')",
    "import sys; sys.exit('a message')",
    "x = 1\nprint(__name__, 'context' in globals(), 'llm_query' in globals())",
]


def test_pool_run_gives_run_s_result(settings: Dict[str, Any]) -> None:
    with Pool(2, **settings) as pool:
        for code in SNIPPETS:
            pooled, cold = pool.run(code), rlm_sandbox.run(code, **settings)
            assert (pooled.status, pooled.exit_code, pooled.signal, pooled.stdout) == (
                cold.status, cold.exit_code, cold.signal, cold.stdout
            ), code
            assert pooled.stderr.splitlines()[-1:] == cold.stderr.splitlines()[-1:], code
        # A marker of one run is not seen by the next (each run its own sandbox).
        pool.run("open('/tmp/run-marker', 'w').write('x')")
        assert pool.run("import os; print(os.path.exists('/tmp/run-marker'))").stdout == "False\n"


def test_a_runs_sandbox_ends_off_the_callers_path_and_close_waits_for_it(settings: Dict[str, Any]) -> None:
    """pool.run returns before its sandbox is removed, without a thread of
    its own or a request for it (its input is closed by the pool's thread:
    the session removes the sandbox on its own); close waits for that
    removal."""
    with Pool(1, **settings) as pool:
        assert pool.wait_full()
        pid = standby_pids(pool)[0]
        assert pool.run("print(1)").stdout == "1\n"
        assert not [t for t in threading.enumerate() if t.name == "rlm-sandbox-retire"]
        keeper = pool._keeper
        assert keeper is not None
        assert keeper.wait_retired(60)
        assert [process.pid for process, _ in keeper.retiring] == [pid]
    assert_clean(Path(settings["state_dir"]), pid)
    assert_gc_finds_nothing(settings)


def test_a_prelude_runs_in_each_standby_on_its_own_before_its_claim(settings: Dict[str, Any]) -> None:
    # The prelude draws a random token: each sandbox runs it itself (two
    # claims see two tokens), and its globals are the claim's.
    prelude = "import os\nTOKEN = os.urandom(8).hex()\n"
    with Pool(2, prelude=prelude, **settings) as pool:
        assert pool.wait_full(120)
        tokens = []
        for _ in range(2):
            with pool.session() as session:
                assert session.ready.get("standby") is True
                tokens.append(session.exec("print(TOKEN)").stdout.strip())
        assert len(tokens[0]) == 16 and tokens[0] != tokens[1], tokens
    with Pool(1, prelude="raise ValueError('no prelude today')", **settings) as broken:
        with pytest.raises(SandboxUnavailable):
            broken.wait_full(120)
