"""Running a cell as `python3 FILE` runs a file (an `exec` with
`"namespace": "script"`): what a one-shot run drawn from a standby needs
to give the result `rlm-sandbox run` gives for the same code.

The code runs in a fresh `__main__` of its own (no sandbox names, no
earlier cell's globals), compiled as the file `rlm-sandbox run` writes
(SCRIPT_FILE), so its tracebacks read the same. Its end is the
interpreter's: an uncaught exception's traceback on stderr and exit code
1, SystemExit's code as CPython turns it into an exit status, an uncaught
KeyboardInterrupt as 130 (a death by SIGINT); then, as at interpreter
exit, the threads it started that are not daemons are joined and its
atexit functions run.
"""

from __future__ import annotations

import atexit
import sys

from .cell import Cells
from .interrupts import SIGINT, USER_FILES, protocol
from .namespace import new_namespace
from .output import write_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from typing import Any, Optional


#: Where `rlm-sandbox run` puts the code (INPUT_DIR/CODE_FILE, checked by a
#: host test): the file name a script's frames carry.
SCRIPT_FILE = "/rlm/main.py"
USER_FILES.add(SCRIPT_FILE)

#: The exit status of a death by SIGINT, as the runtimes report it.
SIGINT_EXIT = 128 + SIGINT


def exit_status(code: Any) -> tuple[int, Optional[str]]:
    """SystemExit's `code` as CPython's exit makes it an exit status, and
    the text it prints on stderr first: None is 0; an int is its low byte
    (CPython truncates to a C long, -1 when it does not fit); anything
    else is printed (its str) and is 1."""
    if code is None:
        return 0, None
    if isinstance(code, int):
        if not -(1 << 63) <= code < (1 << 63):
            return 255, None
        return int(code) & 0xFF, None
    try:
        text = str(code)
    except Exception:
        text = ""
    return 1, text + "\n"


class Scripts(Cells):
    """One-shot code run as a file is."""

    def run_script(self, cell: int, code: str) -> tuple[str, int]:
        """Runs `code` as a script with the cell's output files: (status,
        exit status). Status is "ok" for exit 0, "interrupted" when a
        KeyboardInterrupt ended it, else "error"."""
        self._ensure_std_streams()
        self.value = None
        output = self._start_output(cell)
        if output is None:
            return "error", 1
        try:
            status, exit_code = self._execute_script(cell, code)
        finally:
            self._end_output(output)
        return status, exit_code

    def _execute_script(self, cell: int, code: str) -> tuple[str, int]:
        """Compiles and runs the script, then does what interpreter exit does."""
        scope = new_namespace()
        scope["__file__"] = SCRIPT_FILE
        scope["__cached__"] = None
        sys.argv = [SCRIPT_FILE]
        self.sources.put(SCRIPT_FILE, code)
        try:
            compiled = compile(code, SCRIPT_FILE, "exec", dont_inherit=True)
        except Exception as e:
            self._print_exception(e)
            return "error", 1
        self.interrupts.install()
        failure = self._run_script(cell, compiled, scope)
        if failure is None:
            exit_code = 0
        elif isinstance(failure, SystemExit):
            exit_code, text = exit_status(failure.code)
            if text is not None:
                self._write_stderr(text)
        else:
            self._print_exception(failure)
            exit_code = SIGINT_EXIT if isinstance(failure, KeyboardInterrupt) else 1
        self._exit_like_python()
        if isinstance(failure, KeyboardInterrupt):
            return "interrupted", exit_code
        return ("ok" if exit_code == 0 else "error"), exit_code

    @protocol
    def _run_script(self, cell: int, compiled: types.CodeType, scope: dict[str, Any]) -> Optional[BaseException]:
        """exec of the script, the only place interrupts land; every
        exception is caught (the agent must answer `done`)."""
        try:
            self.interrupts.enter(cell)
            self.interrupts.check()
            exec(compiled, scope)
        except BaseException as e:
            self.interrupts.leave()
            return e
        self.interrupts.leave()
        return None

    def _write_stderr(self, text: str) -> None:
        """`text` on the script's stderr, after what it printed."""
        try:
            sys.stdout.flush()
            sys.stderr.write(text)
            sys.stderr.flush()
        except Exception:
            write_fd(2, text)

    def _exit_like_python(self) -> None:
        """Interpreter exit's work, in its order: threading's shutdown (its
        own exit functions first, e.g. concurrent.futures telling its
        workers to end, then a join of every non-daemon thread until none
        is left), then the atexit functions (which print their own
        errors). A thread that never ends holds the cell until the host's
        timeout kills the sandbox, as it would hold `python3` until the
        run's timeout. Without `threading` imported the script made no
        thread python3 would join (the agent's own are not threading's).
        The sandbox ends after its script, so threading may be shut down."""
        threading = sys.modules.get("threading")
        if threading is not None:
            try:
                threading._shutdown()  # what Py_FinalizeEx calls (CPython 3.11)
            except BaseException:
                return
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
