"""What a SandboxInterpreter's sandbox holds (SUBMIT's fields, the tools'
signatures, the inputs it was sent, its context files, the inputs it keeps
bound) and what a step must send to bring it up to date: only what changed
travels. rlm_sandbox.dspy runs the cells; this keeps the record, which a
step's preparation changes only once the sandbox did what it sent (files
excepted: a file added is there whatever follows)."""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from dspy.primitives.code_interpreter import CodeInterpreterError

from ._dspy_boundary import Input, Sent, prepare_input, tool_params, unchanged

#: An input whose JSON is larger travels as a context file, not as code.
INLINE_BYTES = 64 * 1024
#: DSPy's own tools: the sandbox's llm_query answers them.
QUERY_TOOLS = frozenset({"llm_query", "llm_query_batched"})
_CONTEXT_ALIASES = frozenset({"context", "ctx"})
_CONTEXT_N = re.compile(r"context_[0-9]+\Z")

#: A tool's signature as the sandbox takes it.
ToolSpecs = Dict[str, List[List[Any]]]


@dataclass
class Step:
    """What a step's cell carries beside its code: the setup binding its
    inputs and what the sandbox holds once it ran, or the kept inputs to
    restore."""

    setup: Optional[str] = None
    keep: List[str] = field(default_factory=list)
    restore: List[str] = field(default_factory=list)
    names: Optional[List[str]] = None
    specs: Optional[ToolSpecs] = None
    pending: Dict[str, Sent] = field(default_factory=dict)


def check_name(name: Any, what: str) -> None:
    """A name the sandbox may bind: an identifier, no context_N, not
    SUBMIT or __builtins__ (LocalInterpreter refuses both). The sandbox's
    other own names (answer, FINAL, llm_query, ...) it refuses itself (its
    support's `apply`): checking them here would wait for a claim's
    `ready` before the step's cell could go out."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise CodeInterpreterError(f"{what} name {name!r} is not a Python identifier")
    if name in ("SUBMIT", "__builtins__") or _CONTEXT_N.match(name):
        raise CodeInterpreterError(f"{what} name {name!r} is one of the sandbox's own names")


class Holdings:
    """The interpreter's record of its sandbox."""

    def __init__(self) -> None:
        self.submit_names: Optional[List[str]] = None
        self.tool_specs: Optional[ToolSpecs] = None
        #: Each tool's signature, read once per function object.
        self._tool_params: Dict[str, Tuple[Callable[..., Any], List[List[Any]]]] = {}
        self.sent: Dict[str, Sent] = {}
        #: The input names the sandbox keeps bound as the last preparation
        #: bound them (exec's `keep`).
        self.kept: FrozenSet[str] = frozenset()
        #: How many context files the sandbox has.
        self.contexts = 0

    def tool_specs_for(self, tools: Dict[str, Callable[..., Any]], variables: Dict[str, Any]) -> ToolSpecs:
        """The signatures of `tools` (DSPy's query tools aside), checked
        against the sandbox's names and the step's inputs."""
        specs = {}
        for name, fn in tools.items():
            if name in QUERY_TOOLS:
                continue
            check_name(name, "tool")
            if name in _CONTEXT_ALIASES or name in variables:
                raise CodeInterpreterError(f"tool name {name!r} clashes with an input or a sandbox name")
            # The same function object keeps its signature: read it once
            # (inspect.signature is most of a step's own time on the host).
            cached = self._tool_params.get(name)
            if cached is None or cached[0] is not fn:
                cached = self._tool_params[name] = (fn, tool_params(fn))
            specs[name] = cached[1]
        return specs

    def changed_inputs(
        self, variables: Dict[str, Any], ops: Dict[str, Any], add_file: Callable[[str, Input], int]
    ) -> Tuple[List[Tuple[str, str]], Dict[str, Sent], bool]:
        """Adds context files for large changed inputs (`context` first,
        through `add_file`, which returns the file's index) and returns the
        small changed ones as (name, JSON text), with what the sandbox holds
        once they are bound, and whether any input changed; `ops` gets the
        file-borne inputs and the names to bind."""
        for name in variables:
            check_name(name, "input")
        changed: Dict[str, Input] = {}
        for name, value in variables.items():
            sent = self.sent.get(name)
            if unchanged(sent, value):
                continue
            prepared = prepare_input(name, value)
            if sent is None or sent.digest != prepared.digest:
                changed[name] = prepared
        large = [n for n, p in changed.items() if p.size > INLINE_BYTES and p.fits_a_file]
        files = self._order_files(large, variables, changed)
        for name in files:
            # Recorded at once: the file is in the sandbox whatever follows.
            prepared = changed[name]
            index = add_file(name, prepared)
            self.contexts += 1
            self.sent[name] = Sent(prepared.digest, prepared.value, index)
        inline, pending = [], {}
        for name, prepared in changed.items():
            if name not in files:
                inline.append((name, json.dumps(prepared.jsonable)))
                pending[name] = Sent(prepared.digest, prepared.value)
        from_files = {}
        for name in variables:
            sent = self.sent.get(name)
            if name not in pending and sent is not None and sent.context is not None:
                from_files[name] = sent.context
        if from_files:
            ops["files"] = from_files
        if variables:
            ops["bind"] = list(variables)
        return inline, pending, bool(changed)

    def _order_files(self, files: List[str], variables: Dict[str, Any], changed: Dict[str, Input]) -> List[str]:
        """Once the sandbox has a context file, its `context` is the first
        file's value and `ctx` the first file, restored after every cell:
        an input named `context` must be that file, one named `ctx`
        cannot be bound."""
        if not files and self.contexts == 0:
            return files
        if "ctx" in variables:
            raise CodeInterpreterError("an input named 'ctx' cannot be bound: the sandbox's ctx is its first context file")
        if "context" not in variables:
            return files
        sent = self.sent.get("context")
        if sent is not None and sent.context == 0 and "context" not in changed:
            return files
        if self.contexts > 0:
            raise CodeInterpreterError(
                "the input 'context' cannot change once the sandbox has context files: its `context` is the first "
                "file's value; use a new SandboxInterpreter"
            )
        prepared = changed.get("context") or prepare_input("context", variables["context"])
        if not prepared.fits_a_file:
            raise CodeInterpreterError(
                "the input 'context' must be a str, dict or list when another input is large: the sandbox's "
                "`context` is its first context file"
            )
        changed["context"] = prepared
        return ["context"] + [n for n in files if n != "context"]

    def record(self, step: Step) -> None:
        """What the step's setup did, once it ended ok."""
        self.submit_names, self.tool_specs = step.names, step.specs
        self.sent.update(step.pending)
        self.kept = frozenset(step.keep) | self.kept

    def forget_inline(self) -> None:
        """After a failed preparation nothing small is known to be there
        (files stay: their context_N remain); send it all again."""
        self.sent = {n: s for n, s in self.sent.items() if s.context is not None}
        self.submit_names = self.tool_specs = None
        self.kept = frozenset()
