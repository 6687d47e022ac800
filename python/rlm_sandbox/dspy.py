"""A DSPy `CodeInterpreter` on rlm-sandbox: `dspy.RLM(...,
interpreter_factory=SandboxInterpreter)` runs the model's code in a
gVisor/runc session instead of Deno/Pyodide (no 3 s start, no ~128 MB
variable ceiling; the sandbox has no network).

How DSPy's contract maps onto a session (dspy 3.4):
- `tools` is the live dict RLM fills after the factory returns. The
  session starts at the first `start()`/`execute()` (RLM runs its facade
  shim through `execute` before `start()`), with the tools known then.
  DSPy's `llm_query`/`llm_query_batched` are not declared as tools: the
  sandbox's own `llm_query*` calls come to the host, where each prompt is
  answered by `tools["llm_query"](prompt=...)`, concurrently for a batch.
  A tool added after the start cannot be declared into a running sandbox:
  calling it is a NameError in the code (no silent restart).
- `SUBMIT(...)` is defined in the sandbox with the signature's output
  fields (from `output_fields`, which RLM sets); it records the fields as
  the cell's final answer and ends the cell at once, and `execute`
  returns `FinalOutput(fields)`. An old SUBMIT cannot end a later cell:
  the sandbox resets its answer after the cell that set it.
- Variables: DSPy passes every input again on every iteration. A value
  already bound in the sandbox (same name, same JSON) is not sent again;
  a small one is bound by a line of code that parses its JSON, a large
  one travels as a context file (mounted, never source code).
- Errors: an exception in the code is `CodeExecutionError`, bad syntax is
  `SyntaxError`, a cell past its timeout is `CodeExecutionError` (the
  sandbox lives on); a sandbox that ended (out of memory, killed) is
  `CodeInterpreterError`, and so is every later call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Dict, List, Optional

from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput

from .errors import SandboxError
from .results import Cell
from .session import Session

# Serialized inputs above this travel as context files, not as code.
INLINE_BYTES = 64 * 1024
_SUBMIT_MARK = "\x00rlm-sandbox-dspy-submit\x00"
_QUERY_TOOLS = ("llm_query", "llm_query_batched")

_SUBMIT_SOURCE = '''
class _SubmitCalled(BaseException):
    """Ends the cell that called SUBMIT (not an Exception: `except Exception` in model code cannot swallow it)."""


def SUBMIT(*args, **kwargs):
    """Submit the final output: the output fields, by position or by name. Ends this step."""
    import json as _json
    names = {names!r}
    if len(args) > len(names) if names else args:
        raise TypeError("SUBMIT() takes the output fields %s" % (names,))
    fields = dict(zip(names, args))
    for key in kwargs:
        if key in fields:
            raise TypeError("SUBMIT() got %r twice" % (key,))
    fields.update(kwargs)
    missing = [n for n in names if n not in fields]
    if missing:
        raise TypeError("SUBMIT() is missing output fields %s" % (missing,))
    globals()["answer"]["content"] = {mark!r} + _json.dumps(fields, default=repr)
    globals()["answer"]["ready"] = True
    raise _SubmitCalled()
'''


def _digest(value: Any) -> Optional[str]:
    """A fingerprint of a JSON value, or None when it is not one."""
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SandboxInterpreter:
    """DSPy's CodeInterpreter protocol over an rlm-sandbox Session.
    Keyword arguments are Session settings (`runtime`, `memory`,
    `timeout`, ...)."""

    def __init__(self, tools: Optional[Dict[str, Callable[..., Any]]] = None, **settings: Any) -> None:
        self._tools: Dict[str, Callable[..., Any]] = tools if tools is not None else {}
        self.output_fields: Optional[List[Dict[str, Any]]] = None
        self._settings = settings
        self._session: Optional[Session] = None
        self._sent: Dict[str, str] = {}
        self._dead: Optional[str] = None
        self._shut = False

    @property
    def tools(self) -> Dict[str, Callable[..., Any]]:
        """The live dict DSPy updates in place."""
        return self._tools

    @property
    def session(self) -> Optional[Session]:
        return self._session

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Starts the sandbox (idempotent). A sandbox that ended is not
        restarted: its state is gone, so that is CodeInterpreterError."""
        if self._shut:
            raise CodeInterpreterError("the SandboxInterpreter was shut down; create a new one")
        if self._dead is not None:
            raise CodeInterpreterError(f"the sandbox has ended: {self._dead}")
        if self._session is not None:
            return
        declared = {n: fn for n, fn in self._tools.items() if n not in _QUERY_TOOLS}
        try:
            self._session = Session(llm=self._llm, tools=declared, **self._settings)
        except SandboxError as e:
            raise CodeInterpreterError(f"the sandbox could not start: {e}") from e
        names = [f["name"] for f in (self.output_fields or []) if isinstance(f, dict) and "name" in f]
        self._run(_SUBMIT_SOURCE.format(names=names, mark=_SUBMIT_MARK))

    def shutdown(self) -> None:
        """Removes the sandbox and everything it created."""
        self._shut = True
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> "SandboxInterpreter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # -- the host side -----------------------------------------------------

    def _llm(self, prompt: str, model: Optional[str]) -> str:
        """The sandbox's llm_query, answered by DSPy's own tool (it counts
        the RLM's call budget and picks its sub-LM)."""
        tool = self._tools.get("llm_query")
        if tool is None:
            return "Error: no llm_query tool is registered with this interpreter"
        return str(tool(prompt=prompt))

    # -- code --------------------------------------------------------------

    def _live(self) -> Session:
        self.start()
        assert self._session is not None
        return self._session

    def _run(self, code: str) -> Cell:
        """One cell; a sandbox that ended is CodeInterpreterError."""
        try:
            cell = self._live().exec(code)
        except SandboxError as e:
            self._dead = str(e).split("\n", 1)[0]
            raise CodeInterpreterError(f"the sandbox has ended: {self._dead}") from e
        if cell.session_dead:
            self._dead = f"status {cell.status}: {cell.error}"
            raise CodeInterpreterError(f"the sandbox has ended ({cell.status}): {cell.error}")
        return cell

    def _bind(self, variables: Dict[str, Any]) -> None:
        """Binds the inputs that are new or changed since the last call."""
        session = self._live()
        lines = []
        for name, value in variables.items():
            if not name.isidentifier():
                raise CodeInterpreterError(f"variable name {name!r} is not a Python identifier")
            digest = _digest(value)
            if digest is None:  # not JSON: the sandbox gets its str()
                value = str(value)
                digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
            if self._sent.get(name) == digest:
                continue
            text = json.dumps(value, ensure_ascii=False)
            if len(text) > INLINE_BYTES:
                added = session.add_context(value if isinstance(value, (str, dict, list)) else text)
                lines.append(f"{name} = {added['name']}")
            else:
                lines.append(f"{name} = __import__('json').loads({text!r})")
            self._sent[name] = digest
        if lines:
            cell = self._run("\n".join(lines))
            if not cell.ok:
                raise CodeInterpreterError(f"binding the inputs failed: {cell.stderr.strip()}")

    def execute(self, code: str, variables: Optional[Dict[str, Any]] = None) -> Any:
        """Runs `code` with `variables` bound; FinalOutput on SUBMIT, else
        the printed output (None when nothing was printed)."""
        if variables:
            self._bind(variables)
        cell = self._run(code)
        final = cell.final_answer
        if final is not None and final.startswith(_SUBMIT_MARK):
            return FinalOutput(json.loads(final[len(_SUBMIT_MARK):]))
        if cell.status == "ok":
            return cell.stdout or None
        last = cell.stderr.strip().splitlines()[-1] if cell.stderr.strip() else cell.status
        if cell.status == "error" and last.startswith("SyntaxError"):
            raise SyntaxError(f"Invalid Python syntax. message: {cell.stderr.strip()}")
        if cell.status == "timeout":
            last = f"the code ran past its timeout and was interrupted ({last})"
        elif cell.status == "output_limit":
            last = "the code printed more than the output limit and was interrupted"
        if cell.stdout:
            last += "\nOutput before the error:\n" + cell.stdout
        raise CodeExecutionError(last)
