"""Sessions whose agent is elsewhere: `Session(agent_command=...)` and
`Session(k8s_pool=...)`, end to end through the binary, without a
cluster. A fake kubectl (a shell script) logs what it is asked and
answers as the agent-sandbox controller would; its `exec` starts the
agent from this checkout on this host (no sandbox: these tests are about
the transport and the claim's lifetime, tests/podman.rs runs the agent
in a real container). What is checked: the claim is created on the pool,
its pod is exec'd, and the claim is deleted after close and after
SIGTERM; refused combinations start nothing."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

from rlm_sandbox import Session, find_binary

from conftest import CHECKOUT

AGENT = f"cd {shlex.quote(str(CHECKOUT / 'rootfs-builder/python'))} && exec {shlex.quote(sys.executable)} -B -m _rlm_agent"


@pytest.fixture
def kubectl(tmp_path: Path) -> Path:
    """The fake kubectl; its log is `log` beside it, one argv per line."""
    path = tmp_path / "kubectl"
    path.write_text(
        f"""#!/bin/sh
d={shlex.quote(str(tmp_path))}
echo "$*" >> "$d/log"
case "$1" in
  create) cat > "$d/created"; echo sandboxclaim.extensions.agents.x-k8s.io/x ;;
  wait) echo condition met ;;
  get) case "$*" in *sandboxclaims*) printf sb-1 ;; *) printf pool-pod-7 ;; esac ;;
  exec) {AGENT} ;;
  delete) echo deleted ;;
esac
"""
    )
    path.chmod(0o755)
    return path


def calls(kubectl: Path) -> List[str]:
    log = kubectl.parent / "log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_a_session_in_a_claimed_pod_deletes_its_claim(kubectl: Path, state_dir: Path) -> None:
    def llm(prompt: str, model: Any = None) -> str:
        return "42, says the orchestrator"

    with Session(k8s_pool="pool", namespace="ns", kubectl=str(kubectl), llm=llm, state_dir=str(state_dir)) as s:
        cell = s.exec("k = 'AKIAIOSF' + 'ODNN7EXAMPLE'\nprint(k)\nprint(llm_query('6*7?'))")
        assert cell.status == "ok", cell
        # The host side is unchanged: the filter redacts, the call is answered here.
        assert "[REDACTED:aws_access_key_id]" in cell.stdout and "AKIAIOSFODNN7EXAMPLE" not in cell.stdout
        assert "42, says the orchestrator" in cell.stdout
        assert calls(kubectl) == ["create", "wait", "get", "get", "exec"]
    assert calls(kubectl) == ["create", "wait", "get", "get", "exec", "delete"]
    claim = json.loads((kubectl.parent / "created").read_text())
    assert claim["spec"] == {"warmPoolRef": {"name": "pool"}}
    lines = (kubectl.parent / "log").read_text().splitlines()
    name = claim["metadata"]["name"]
    assert lines[4].startswith("exec -n ns -i pool-pod-7 -c agent -- ")
    assert lines[5] == f"delete -n ns sandboxclaims.extensions.agents.x-k8s.io/{name} --ignore-not-found --wait=false"


def test_sigterm_deletes_the_claim(kubectl: Path, state_dir: Path) -> None:
    env = {**os.environ, "RLM_STATE_DIR": str(state_dir)}
    proc = subprocess.Popen(
        [find_binary(), "session", "--k8s-claim", "pool", "--kubectl", str(kubectl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready", ready
        # Control: the claim lives while the session does.
        assert calls(kubectl) == ["create", "wait", "get", "get", "exec"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert calls(kubectl) == ["create", "wait", "get", "get", "exec", "delete"]


def test_an_agent_command_session(state_dir: Path) -> None:
    with Session(agent_command=AGENT, state_dir=str(state_dir)) as s:
        assert s.exec("x = 6 * 7").status == "ok"
        assert s.exec("print(x)").stdout == "42\n"


@pytest.mark.parametrize(
    "kwargs,says",
    [
        ({"agent_command": "x", "k8s_pool": "p"}, "not both"),
        ({"namespace": "ns"}, "go with k8s_pool"),
        ({"kubectl": "/usr/bin/kubectl"}, "go with k8s_pool"),
        ({"k8s_pool": "p", "contexts": ["data"]}, "contexts cannot reach"),
        ({"agent_command": "x", "contexts": ["data"]}, "contexts cannot reach"),
        ({"agent_command": "  "}, "non-empty shell command"),
    ],
)
def test_refused_combinations_start_nothing(kwargs: Any, says: str) -> None:
    # A binary that does not exist: a started process would be a different error.
    with pytest.raises(ValueError, match=says):
        Session(binary="/nonexistent/rlm-sandbox", **kwargs)
