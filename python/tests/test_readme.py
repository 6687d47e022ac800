"""The README's "From Python" examples run as written (each in a fresh
interpreter, in an empty directory), on both runtimes, with the models
they name served by the scripted server through the standard OpenAI
environment variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from rlm_sandbox import find_binary

from conftest import CHECKOUT
from scripted_llm import ScriptedLLM, user_text


def examples() -> List[str]:
    text = (CHECKOUT / "README.md").read_text()
    section = text.split("### From Python", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"```python\n(.*?)```", section.split(POOL_HEADING, 1)[0], re.S)
    return found + re.findall(r"```python\n(.*?)```", section.split(POOL_HEADING, 1)[1], re.S)


POOL_HEADING = "### Keep a pool for DSPy and rlms"


def test_the_section_has_an_example_for_each_integration() -> None:
    found = examples()
    assert len(found) == 5, found
    assert "rlm_sandbox.Session(" in found[0]
    assert "rlm_sandbox.rlms.install()" in found[1]
    assert "rlm_sandbox.dspy" in found[2] and "dspy.RLM(" in found[2]
    assert "rlm_sandbox.dspy" in found[3] and "dspy.Flex(" in found[3]
    assert "rlm_sandbox.Pool(" in found[4] and "factory(pool=pool)" in found[4] and '{"pool": pool}' in found[4]


def _model(messages: List[Dict[str, Any]]) -> str:
    """Plays the root model of an rlms RLM, the action step of a
    dspy.RLM (a system prompt: write code that asks a sub-model and
    answers), the predictor of the dspy.Flex example and the sub-model
    (find the quoted word)."""
    system = " ".join(str(m.get("content")) for m in messages if m.get("role") == "system")
    quoted = re.search(r"'(\w+)'", user_text(messages))
    if "[[ ## code_word ## ]]" in system and "[[ ## code ## ]]" not in system:  # the Flex module's Predict
        return "[[ ## code_word ## ]]\n'%s'\n\n[[ ## completed ## ]]" % (quoted.group(1) if quoted else "none")
    if "[[ ## code ## ]]" in system:  # dspy.RLM's action step (ChatAdapter fields)
        return (
            "[[ ## reasoning ## ]]\nAsk the sub-model.\n\n[[ ## code ## ]]\n```python\n"
            "SUBMIT(code_word=llm_query('Which word is the code word? ' + document))\n```\n\n[[ ## completed ## ]]"
        )
    if system:
        return (
            "```repl\nword = llm_query('Which word is the code word? ' + str(context))\n"
            "answer['content'] = word\nanswer['ready'] = True\n```"
        )
    return quoted.group(1) if quoted else "no word"


EXPECTED = {
    0: ["ok {'APPLES': '3', 'PEARS': '5'} 15 crates\n llm_query", "['apples', 'pears']", "42"],
    1: ["heron"],
    2: ["heron"],
    3: ["heron True"],
    4: ["heron\nheron\n42\n42\n"],
}


@pytest.mark.parametrize("index", sorted(EXPECTED))
def test_example_runs(index: int, runtime: str, tmp_path: Path) -> None:
    code = examples()[index]
    with ScriptedLLM({"gpt-4o-mini": _model}) as llm:
        # Run from an empty directory, so the binary comes from RLM_SANDBOX_BIN
        # (as the README says for code outside the checkout).
        env = dict(os.environ, RLM_DOCKER_RUNTIME=runtime, OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="unused",
                   RLM_SANDBOX_BIN=find_binary())
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for expected in EXPECTED[index]:
        assert expected in proc.stdout, proc.stdout
