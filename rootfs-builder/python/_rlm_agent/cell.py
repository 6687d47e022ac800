"""Running one cell: its output files on fd 1 and 2, user code under
interrupts, its traceback, its value and its final answer.

The middle layer of the agent (dispatch.Agent is built on this, this on
scaffold.Scaffold): what happens between an `exec` arriving and its `done`
going out, apart from the message handling so that the part that runs user
code, and must keep the protocol intact around it, reads on its own. It
also owns the output watchdog thread, which watches the running cell.
"""

from __future__ import annotations

import os
import sys
import time

from .interrupts import CELL_PREFIX, protocol
from .namespace import (
    compile_cell,
    describe_value,
    format_user_exception,
    is_true,
    MAX_VALUE_JSON,
    MAX_VALUE_REPR,
    MISSING,
    new_answer,
)
from .output import WATCH_EVERY, CellOutput, close_quietly, flush, held, text_stream, usable, write_fd
from .scaffold import Scaffold
from . import sources, sync
from .wire import Channel, DEFAULT_MAX_OUTPUT_BYTES, FRAME_SLACK, STDERR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import deque
    import types
    from typing import Any, Optional
else:
    from _collections import deque  # collections without its import (functools, ...)


#: Cells whose source tracebacks can show.
KEPT_SOURCES = 256


class Cells(Scaffold):
    """The running cell's output and the cell run itself."""

    def __init__(self, channel: Channel, diag: int, devnull: int) -> None:
        super().__init__(channel, diag)
        self.devnull = devnull
        self.max_output = DEFAULT_MAX_OUTPUT_BYTES
        #: The running cell's output, and who may end it: the main thread
        #: (the cell ended) or the watchdog (past the ceiling). One token
        #: per cell; whoever pops it (list.pop is atomic under the GIL)
        #: ends the output, so the main thread takes no lock in the common
        #: case (under gVisor a lock costs a system call: CPython 3.11
        #: reads the clock). The watchdog acts under `output_lock`, which
        #: the main thread waits on only when it lost the token.
        self.output: Optional[CellOutput] = None
        self.output_token: list[bool] = []
        self.output_lock = sync.Lock()
        #: Output files made ahead for the next cell.
        self.spare: Optional[CellOutput] = None
        #: The last cell's output descriptors, still open: the next cell's
        #: files take their numbers (see CellOutput).
        self.retired: list[int] = []
        #: Output frames of the last cell that go out with its `done`.
        self.unsent = b""
        #: Cell sources for tracebacks, and their file names, oldest first.
        self.sources = sources.shared()
        self.source_names: deque[str] = deque()
        #: The running cell's trailing expression's value, as `done` carries it.
        self.value: Optional[dict[str, Any]] = None
        #: Values `exec`'s `keep` kept, by name, for a later `restore`.
        self.kept: dict[str, Any] = {}
        #: How the running cell's setup ended (None: it had none, or it
        #: did not run), as `done` carries it.
        self.setup_status: Optional[str] = None

    def run_cell(self, cell: int, code: str, rlms: bool = False, restore: tuple[str, ...] = (),
                 keep: tuple[str, ...] = (), setup: Optional[str] = None) -> tuple[str, Optional[str]]:
        """Runs `code` with its own output files: (status, final answer).
        With `rlms`, only the bindings rlms's LocalREPL would keep outlive
        the cell (see `_keep_as_rlms`). The names in `restore` are bound to
        their kept values before the code runs, and those in `keep` kept
        after a cell that ended ok (`exec`'s options: a step whose inputs
        did not change rebinds them in its own cell, no cell before it).
        A `setup` is compiled and run on its own after `restore`, before
        the code: the code runs only when it ended ok, and `keep` then
        keeps what it bound (a step's inputs, before the code can rebind
        them); `setup_status` says how it ended. One cell instead of a
        cell of setup and a cell of code: under gVisor a cell's fixed
        cost is tens of system calls."""
        self._ensure_std_streams()
        self.value = None
        self.setup_status = None
        output = self._start_output(cell)
        if output is None:
            return "error", None
        self.rlms_names = rlms
        try:
            if not self._restore_kept(restore):
                status = "error"
            elif setup is not None and self._run_setup(cell, setup, keep) != "ok":
                status = self.setup_status or "error"
            else:
                before = dict(self.globals) if rlms else None
                status = self._execute(cell, code)
                if before is not None:
                    self._keep_as_rlms(before, status == "ok")
                if status == "ok" and setup is None:
                    self._keep(keep)
            final = self._take_answer()
            self._restore_names()
        finally:
            self.rlms_names = False
            self._end_output(output)
        return status, final

    def _run_setup(self, cell: int, setup: str, keep: tuple[str, ...]) -> str:
        """The cell's setup, as a cell of its own would run it (its value
        is not reported); `keep` after it when it ended ok."""
        status = self.setup_status = self._execute(cell, setup, "%s%d setup>" % (CELL_PREFIX, cell))
        self.value = None
        if status == "ok":
            self._keep(keep)
        return status

    def _restore_kept(self, names: tuple[str, ...]) -> bool:
        """Binds each name to its kept value; False (the cell does not run,
        its stderr says why) when one was never kept: the host's record
        of what it kept is wrong, and code must not run without its inputs."""
        missing = [name for name in names if name not in self.kept]
        if missing:
            write_fd(2, "rlm-sandbox: exec's restore names %s, which no earlier cell kept\n" % missing)
            return False
        for name in names:
            self.globals[name] = self.kept[name]
        return True

    def _keep(self, names: tuple[str, ...]) -> None:
        """Keeps each name's value now (the object itself, as a binding
        would: changed in place, it stays changed); a name the globals do
        not hold is forgotten."""
        for name in names:
            value = self.globals.get(name, MISSING)
            if value is MISSING:
                self.kept.pop(name, None)
            else:
                self.kept[name] = value

    def _keep_as_rlms(self, before: dict[str, Any], ok: bool) -> None:
        """Undoes what LocalREPL would not keep of a cell: all its bindings
        when it did not end ok (LocalREPL runs a cell in a copy of its
        namespace and keeps the copy only when no exception came out), and
        its bindings of names starting with "_" otherwise (LocalREPL copies
        back only the others). Objects the cell changed in place stay
        changed, as there. A shallow copy per cell, in the sandbox: cheaper
        than the second cell per cell the host would otherwise send."""
        g = self.globals
        if not ok:
            g.clear()
            g.update(before)
            return
        for name in [n for n in g if isinstance(n, str) and n.startswith("_") and n not in before]:
            del g[name]
        for name, value in before.items():
            if isinstance(name, str) and name.startswith("_") and g.get(name, MISSING) is not value:
                g[name] = value

    def _execute(self, cell: int, code: str, filename: Optional[str] = None) -> str:
        """Compiles and runs the cell (or its setup, under `filename`); a
        failure's traceback goes to its stderr."""
        filename = filename or "%s%d>" % (CELL_PREFIX, cell)
        self._remember_source(filename, code)
        try:
            compiled, last = compile_cell(code, filename)
        except Exception as e:
            self._print_exception(e)
            return "error"
        if not self.interrupts.installed():
            # Only when user code replaced it: a system call per cell is
            # dear under gVisor (tens of microseconds).
            self.interrupts.install()
        failure = self._run_user(cell, compiled, last)
        if failure is None:
            return "ok"
        self._print_exception(failure)
        return "interrupted" if isinstance(failure, KeyboardInterrupt) else "error"

    def _remember_source(self, filename: str, code: str) -> None:
        """Keeps the cell's source for tracebacks (linecache), for the last
        KEPT_SOURCES cells only: a long session must not keep all its code."""
        self.sources.put(filename, code)
        self.source_names.append(filename)
        while len(self.source_names) > KEPT_SOURCES:
            self.sources.drop(self.source_names.popleft())

    @protocol
    def _run_user(self, cell: int, compiled: types.CodeType,
                  last: Optional[types.CodeType]) -> Optional[BaseException]:
        """exec of user code, then eval of its trailing expression: the only
        place interrupts are allowed. Every exception is caught here:
        SystemExit is an error of the cell, not the end of the session."""
        try:
            self.interrupts.enter(cell)
            self.interrupts.check()
            exec(compiled, self.globals)
            value = None if last is None else eval(last, self.globals)
            if value is not None:
                budget = min(MAX_VALUE_JSON, self.channel.max_frame - FRAME_SLACK - 2 * MAX_VALUE_REPR)
                self.value = describe_value(value, budget)
        except BaseException as e:
            self.interrupts.leave()
            return e
        self.interrupts.leave()
        return None

    def _print_exception(self, exc: BaseException) -> None:
        """The user's traceback, after what the cell printed, on its stderr."""
        flush(sys.stdout)
        flush(sys.stderr)
        try:
            text = format_user_exception(exc)
        except Exception as e:
            text = "%s (its traceback could not be formatted: %s)\n" % (type(exc).__name__, type(e).__name__)
        write_fd(2, text)

    def _ensure_std_streams(self) -> None:
        """Makes print work again if user code closed or removed sys.stdout/stderr."""
        if not usable(sys.stdout):
            sys.stdout = text_stream(1, "w")
        if not usable(sys.stderr):
            sys.stderr = text_stream(2, "w")

    def _prepare_output(self) -> None:
        """Makes the next cell's output files and points fd 1 and 2 at
        them, after this cell's `done` went out, while the host reads it:
        their system calls (a handful, each a round trip into the Sentry
        under gVisor) are off the next cell's path, which starts with its
        files in place. What a thread still printing writes from here on
        is the next cell's output, as it is while that cell runs. Files
        that cannot be made are made (or reported) when the next cell
        starts; until then fd 1 and 2 are /dev/null."""
        self._make_spare()
        if self.spare is None or not self._place(self.spare):
            os.dup2(self.devnull, 1)
            os.dup2(self.devnull, 2)

    def _place(self, output: CellOutput) -> bool:
        """Points fd 1 and 2 at `output`'s files."""
        try:
            os.dup2(output.files[0], 1)
            os.dup2(output.files[1], 2)
        except OSError:
            return False
        output.placed = True
        return True

    def _make_spare(self) -> None:
        """The next cell's output files, unless made already."""
        if self.spare is None:
            try:
                self.spare = self._new_output()
            except OSError:
                pass  # Made (or reported) when the next cell starts.

    def _new_output(self) -> CellOutput:
        """New output files, in the last cell's descriptors' numbers."""
        slots, self.retired = self.retired, []
        return CellOutput(slots)

    def _start_output(self, cell: int) -> Optional[CellOutput]:
        """The cell's output files on fd 1 and fd 2."""
        output, self.spare = self.spare, None
        try:
            output = output or self._new_output()
        except OSError as e:
            # Too many open files, most likely: say so in the cell's stderr.
            self.channel.send(STDERR, ("rlm-sandbox: cannot create the cell's output files: %s\n" % e).encode())
            return None
        output.cell = cell
        # No lock (a lock costs a system call under gVisor): the watchdog
        # acts only on the output it finds in self.output, set once fd 1
        # and 2 point at it; until then it finds None.
        if not output.placed:
            os.dup2(output.files[0], 1)
            os.dup2(output.files[1], 2)
        self.output_token.append(True)
        self.output = output
        return output

    def _end_output(self, output: CellOutput) -> None:
        """Ends the cell's output (the watchdog cannot cut it any more),
        then sends what the cell wrote: each file as far as it is now
        (what a thread still printing writes later is never read: fd 1
        and 2 point at the next cell's files once the `done` is out, see
        _prepare_output)."""
        try:
            self.output_token.pop()
        except IndexError:
            # The watchdog is cutting it off: its `output_limit` goes out
            # before this cell's `done`.
            with self.output_lock:
                pass
        self.output = None
        # What the streams still buffer goes after what the files hold
        # (into /dev/null, as a flush would, once the output was cut off).
        tails = [held(sys.stdout), held(sys.stderr)]
        try:
            self.unsent = output.send(self.channel, self.max_output, [b"", b""] if output.limited else tails)
        finally:
            for fd in self.retired:  # None unless no files were made since the last cell.
                close_quietly(fd)
            self.retired = output.retire()

    def _watch_output(self) -> None:
        """The watchdog thread: frames the channel held go out (see
        Channel.later); a running cell whose output passes the
        host's ceiling has fd 1 and 2 pointed at /dev/null (its files stop
        growing in the sandbox's memory) and the host is told with
        `output_limit`, which interrupts the cell as a timeout does. A
        cell it finds running gets the host's frames read while it runs
        (`reading_needed`): a cell shorter than a tick never pays for it."""
        while True:
            time.sleep(WATCH_EVERY)
            # A `ready` held for the frame of a request that is taking long.
            self.channel.send_held()
            output = self.output
            if output is None:
                continue
            # A cell that runs into a tick may be interrupted: from here
            # on the host's frames are read while it runs.
            self.reading_needed()
            if output.limited:
                continue
            try:
                size = output.size()
            except OSError:
                continue  # The cell ended and closed its files meanwhile.
            if size <= self.max_output:
                continue
            with self.output_lock:
                if self.output is not output:
                    continue
                try:
                    self.output_token.pop()
                except IndexError:
                    continue  # The cell is ending: its output is the main thread's.
                os.dup2(self.devnull, 1)
                os.dup2(self.devnull, 2)
                output.limited = True
                # Under the lock: the cell's `done` cannot go out first.
                self.channel.send_json({"t": "output_limit", "cell": output.cell, "bytes": size})

    # -- answers

    def _take_answer(self) -> Optional[str]:
        """The cell's final answer, if `answer["ready"]` is set (on the
        sandbox's dict, or on a dict user code bound to `answer`); the
        answer is then reset, so an old answer never ends a later task."""
        canon, bound = self.answer, self.globals.get("answer")
        source = canon if is_true(canon.get("ready")) else None
        if source is None and isinstance(bound, dict) and bound is not canon and is_true(bound.get("ready")):
            source = bound
        if source is None:
            if isinstance(bound, dict) and bound is not canon:
                # Rebound to a plain dict: keep its content, as the reference library does.
                canon.clear()
                canon.update(bound)
            canon.setdefault("content", "")
            canon.setdefault("ready", False)
            return None
        final = self._final_text(source.get("content", ""))
        canon.clear()
        canon.update(new_answer())
        return final

    def _final_text(self, content: Any) -> Optional[str]:
        """str(content), cut to what fits in the `done` frame."""
        try:
            text = str(content)
        except Exception as e:
            write_fd(2, "rlm-sandbox: answer['content'] cannot be made a string: %s: %s\n" % (type(e).__name__, e))
            return None
        limit = self.channel.max_frame - FRAME_SLACK
        data = text.encode("utf-8", "replace")
        if len(data) <= limit:
            return text
        write_fd(2, "rlm-sandbox: the final answer (%d bytes) was cut to the frame limit (%d bytes)\n" % (len(data), limit))
        return data[:limit].decode("utf-8", "ignore")
