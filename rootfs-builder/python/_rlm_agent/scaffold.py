"""The sandbox's names in the user's globals, and what they call.

The bottom layer of the agent's state (dispatch.Agent is built on
cell.Cells, built on this): the contexts, the tools, the functions user
code gets (queries, FINAL, FINAL_VAR, SHOW_VARS) and the `answer` dict,
which a cell may rebind or delete and which are put back after each cell;
and the call frames the queries and tools turn into. It is apart from cell
running and from message dispatch because user code reaches it from inside
a cell: what runs here runs on the cell's stack, under its interrupts.
"""

from __future__ import annotations

from . import sync
from .calls import Calls, Waiter, outcome_texts
from .contexts import ContextError, ContextFile, load_value, not_loaded_text, open_context
from .interrupts import Interrupts
from .namespace import make_tool, MISSING, new_answer, new_namespace, size_of
from .output import write_fd
from .wire import (
    Channel,
    DEFAULT_MAX_LOAD_BYTES,
    DEFAULT_MAX_PROMPT_BYTES,
    encode_json,
    FRAME_SLACK,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

    from .interrupts import AnyFunc


class Scaffold:
    """The user's globals and the sandbox's names in them."""

    def __init__(self, channel: Channel, diag: int) -> None:
        self.channel = channel
        self.diag = diag
        self.interrupts = Interrupts(sync.get_ident())
        self.calls = Calls()
        self.max_load = DEFAULT_MAX_LOAD_BYTES
        self.max_prompt = DEFAULT_MAX_PROMPT_BYTES
        self.tools: dict[str, AnyFunc] = {}
        #: index → (handle, value its name holds)
        self.contexts: dict[int, tuple[ContextFile, Any]] = {}
        self.answer = new_answer()
        self.api = self._api()
        self.scaffold: dict[str, Any] = {}
        self.globals = new_namespace()
        self._rebuild_scaffold()
        #: Whether the running cell is an rlms one (SHOW_VARS lists the
        #: contexts then, as LocalREPL's does).
        self.rlms_names = False

    # -- answers

    def final(self, value: Any) -> str:
        """FINAL(x): x, as a string, is the final answer."""
        text = str(value)
        self.answer["content"] = text
        self.answer["ready"] = True
        return text

    def final_var(self, variable_name: Any) -> str:
        """FINAL_VAR(name): the user variable `name` is the final answer.
        As in the reference library, the name is stripped of spaces and
        quotes, and a missing one gives an error string (no answer)."""
        if not isinstance(variable_name, str):
            return self.final(variable_name)
        name = variable_name.strip().strip("\"'")
        if name not in self.globals:
            available = [n for n, _ in self._user_items()]
            if available:
                return ("Error: Variable '%s' not found. Available variables: %s. "
                        "You must create and assign a variable BEFORE calling FINAL_VAR on it." % (name, available))
            return ("Error: Variable '%s' not found. No variables have been created yet. "
                    "You must create and assign a variable in a REPL block BEFORE calling FINAL_VAR on it." % name)
        return self.final(self.globals[name])

    def show_vars(self) -> str:
        """SHOW_VARS(): the user's variables and their types, as the reference
        library words it (in an rlms cell, the contexts first, as LocalREPL lists them)."""
        items = self._user_items()
        if self.rlms_names:
            items = self._context_items() + items
        available = {name: type(value).__name__ for name, value in items}
        if not available:
            return "No variables created yet. Use ```repl``` blocks to create variables."
        return "Available variables: %s" % (available,)

    # -- names

    def _user_items(self) -> list[tuple[str, Any]]:
        """User globals: not starting with "_", not the sandbox's own names."""
        items = []
        for name, value in list(self.globals.items()):
            if not isinstance(name, str) or name.startswith("_"):
                continue
            if self.scaffold.get(name, MISSING) is value:
                continue
            items.append((name, value))
        return items

    def _context_items(self) -> list[tuple[str, Any]]:
        """The contexts' names in LocalREPL's order: context_0, context,
        context_1, ..."""
        items: list[tuple[str, Any]] = []
        for i in sorted(self.contexts):
            items.append(("context_%d" % i, self.contexts[i][1]))
            if len(items) == 1:
                items.append(("context", self.contexts[i][1]))
        return items

    def user_vars(self) -> list[dict[str, Any]]:
        """`vars`: [{name, type, size}], as many as fit in one frame."""
        budget = self.channel.max_frame - FRAME_SLACK
        out = []
        for name, value in self._user_items():
            entry = {"name": name, "type": type(value).__name__, "size": size_of(value)}
            budget -= len(encode_json(entry)) + 1
            if budget < 0:
                break
            out.append(entry)
        return out

    def _rebuild_scaffold(self) -> None:
        """The sandbox's names and the values they must hold."""
        scaffold: dict[str, Any] = {}
        indexes = sorted(self.contexts)
        if indexes:
            scaffold["context"] = self.contexts[indexes[0]][1]
        for i in indexes:
            scaffold["context_%d" % i] = self.contexts[i][1]
        if indexes:
            scaffold["ctx"] = self.contexts[indexes[0]][0]
        scaffold["ctxs"] = tuple(self.contexts[i][0] for i in indexes)
        for name, fn in self.api.items():
            scaffold.setdefault(name, fn)
        for name, fn in self.tools.items():
            scaffold.setdefault(name, fn)
        scaffold["answer"] = self.answer
        self.scaffold = scaffold
        self._restore_names()

    def _restore_names(self) -> None:
        """Puts back every sandbox name user code rebound or deleted."""
        g = self.globals
        for name, value in self.scaffold.items():
            if g.get(name, MISSING) is not value:
                g[name] = value

    def _load_context(self, spec: Any, strict: bool) -> tuple[int, bool]:
        """Opens a context and sets what its name holds: the value, or a
        note when it is above max_load_bytes. In `hello` (not strict) a
        broken context becomes a note too, so the session still starts."""
        handle = open_context(spec) if strict else self._open_lenient(spec)
        if handle is None:
            return -1, False
        name = "context_%d" % handle.index
        position = sum(1 for i in self.contexts if i < handle.index)
        ref = "ctx" if position == 0 else "ctxs[%d]" % position
        if handle.size > self.max_load:
            self.contexts[handle.index] = (handle, not_loaded_text(name, ref, handle.size, self.max_load))
            return handle.index, False
        try:
            value, loaded = load_value(handle), True
        except ContextError as e:
            if strict:
                raise
            value, loaded = "[%s could not be loaded: %s. Read the raw file through %s]" % (name, e, ref), False
        self.contexts[handle.index] = (handle, value)
        return handle.index, loaded

    def _open_lenient(self, spec: Any) -> Optional[ContextFile]:
        """open_context for `hello`: a failure is reported on the diagnostic fd."""
        try:
            return open_context(spec)
        except ContextError as e:
            write_fd(self.diag, "rlm-sandbox agent: %s\n" % e)
            return None

    def _make_tools(self, specs: Any) -> dict[str, AnyFunc]:
        """One function per declared tool; invalid declarations are skipped
        (reported on the diagnostic fd)."""
        tools: dict[str, AnyFunc] = {}
        for spec in specs if isinstance(specs, list) else []:
            name = spec.get("name") if isinstance(spec, dict) else None
            params = spec.get("params") if isinstance(spec, dict) else None
            try:
                if not isinstance(name, str) or self._reserved(name) or not isinstance(params, list):
                    raise ValueError("tool %r clashes with a sandbox name or has no params list" % (name,))
                tools[name] = make_tool(name, params, self.call_tool)
            except ValueError as e:
                write_fd(self.diag, "rlm-sandbox agent: skipped a tool: %s\n" % e)
        return tools

    def _reserved(self, name: str) -> bool:
        """Whether `name` is one of the sandbox's own names (tools may not take it)."""
        return name in self.api or name in ("answer", "context", "ctx", "ctxs") \
            or _is_context_name(name)

    # -- calls

    def _api(self) -> dict[str, AnyFunc]:
        """The functions user code gets, as plain functions (no agent object
        in sight, clean help()): queries, answers, SHOW_VARS."""
        agent = self

        def llm_query(prompt: str, model: Optional[str] = None) -> str:
            """Asks the model one prompt; returns its answer (or "Error: ...")."""
            return agent.query("llm_query", [_prompt(prompt, "llm_query")], _model(model))[0]

        def llm_query_batched(prompts: list[str], model: Optional[str] = None) -> list[str]:
            """Asks the model several prompts at once; answers in order."""
            return agent.query("llm_query", _prompts(prompts, "llm_query_batched"), _model(model))

        def rlm_query(prompt: str, model: Optional[str] = None) -> str:
            """A recursive RLM sub-call (a plain llm_query where the host has none)."""
            return agent.query("rlm_query", [_prompt(prompt, "rlm_query")], _model(model))[0]

        def rlm_query_batched(prompts: list[str], model: Optional[str] = None) -> list[str]:
            """Several recursive RLM sub-calls at once; answers in order."""
            return agent.query("rlm_query", _prompts(prompts, "rlm_query_batched"), _model(model))

        def FINAL(value: Any) -> str:
            """Makes `value` (as a string) the final answer of the task."""
            return agent.final(value)

        def FINAL_VAR(variable_name: str) -> str:
            """Makes the variable named `variable_name` the final answer."""
            return agent.final_var(variable_name)

        def SHOW_VARS() -> str:
            """Returns the variables you created and their types."""
            return agent.show_vars()

        return {
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "SHOW_VARS": SHOW_VARS,
        }

    def query(self, kind: str, prompts: list[str], model: Optional[str]) -> list[str]:
        """Answers for `prompts`: one call frame, or several when one would
        exceed max_frame; a prompt that fits in no frame gets an error."""
        answers: list[Optional[str]] = [None] * len(prompts)
        groups = self._pack(kind, prompts, model, answers)
        outcomes = self._await([
            {"kind": kind, "model": model, "prompts": [prompts[i] for i in group]} for group in groups
        ])
        for group, outcome in zip(groups, outcomes):
            for i, text in zip(group, outcome_texts(outcome, len(group))):
                answers[i] = text
        return [a if a is not None else "Error: no answer" for a in answers]

    def _pack(self, kind: str, prompts: list[str], model: Optional[str],
              answers: list[Optional[str]]) -> list[list[int]]:
        """Groups prompt indexes into frames under max_frame; sets the
        answer of a prompt that fits in none."""
        limit = self.channel.max_frame - FRAME_SLACK
        base = len(encode_json({"t": "call", "call": 0, "kind": kind, "model": model, "prompts": []}))
        groups: list[list[int]] = []
        current: list[int] = []
        size = base
        for i, prompt in enumerate(prompts):
            cost = len(encode_json(prompt)) + 1
            if base + cost > limit:
                answers[i] = self._too_big(prompt, limit)
                continue
            if current and size + cost > limit:
                groups.append(current)
                current, size = [], base
            current.append(i)
            size += cost
        if current:
            groups.append(current)
        return groups

    def _too_big(self, prompt: str, limit: int) -> str:
        """The error for a prompt no frame can carry (the host's wording when
        it is above max_prompt_bytes)."""
        n = len(prompt.encode("utf-8", "replace"))
        if n > self.max_prompt:
            return "Error: prompt of %d bytes is above the limit of %d (RLM_LLM_MAX_PROMPT_BYTES)" % (n, self.max_prompt)
        return "Error: prompt of %d bytes does not fit in a frame of %d bytes" % (n, limit)

    def reading_needed(self) -> None:
        """Someone waits for the host (a call's result) or a cell runs on
        (its interrupt may come): the host's frames must be read now.
        The agent (dispatch.Agent) makes sure they are."""

    def _await(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sends the calls, then waits for all of them. The wait is user
        code for interrupts: a KeyboardInterrupt ends it, and the calls
        are forgotten (their late results ignored)."""
        sent: list[tuple[int, Waiter]] = []
        try:
            for fields in requests:
                sent.append(self.calls.submit(self.channel, fields))
            self.reading_needed()
            self.interrupts.check()
            for _, waiter in sent:
                waiter.event.wait()
        finally:
            for call, waiter in sent:
                if not waiter.event.is_set():
                    self.calls.forget(call)
        self.interrupts.check()
        return [waiter.outcome for _, waiter in sent]

    def call_tool(self, name: str, args: dict[str, Any]) -> Any:
        """A tool call: its single result (any JSON value), or "Error: ..."."""
        fields = {"kind": "tool", "model": None, "name": name, "args": args}
        try:
            size = len(encode_json(fields))
        except (TypeError, ValueError) as e:
            raise TypeError("%s(): arguments must be JSON values: %s" % (name, e)) from None
        if size + FRAME_SLACK > self.channel.max_frame:
            return "Error: the arguments of %s() are %d bytes; the frame limit is %d" % (name, size, self.channel.max_frame)
        outcome = self._await([fields])[0]
        if isinstance(outcome.get("error"), str):
            return "Error: " + outcome["error"]
        results = outcome.get("results")
        return results[0] if isinstance(results, list) and results else None



def _prompt(prompt: Any, fn: str) -> str:
    """A prompt must be a str: anything else is the user's TypeError."""
    if not isinstance(prompt, str):
        raise TypeError("%s() prompt must be str, not %s" % (fn, type(prompt).__name__))
    return prompt


def _prompts(prompts: Any, fn: str) -> list[str]:
    """A batch: a list (or other iterable, not a str) of str."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
        raise TypeError("%s() prompts must be a list of str, not %s" % (fn, type(prompts).__name__))
    out = list(prompts)
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError("%s() prompts[%d] must be str, not %s" % (fn, i, type(p).__name__))
    return out


def _model(model: Any) -> Optional[str]:
    if model is not None and not isinstance(model, str):
        raise TypeError("model must be str or None, not %s" % type(model).__name__)
    return model


def _is_context_name(name: str) -> bool:
    """Whether `name` is `context_` and decimal digits (ASCII): a context's name."""
    digits = name[len("context_"):]
    return name.startswith("context_") and digits.isascii() and digits.isdigit()
