"""A Pool's standbys: the `rlm-sandbox session --standby` processes it
holds, the thread that starts their replacements after claims and ends
them when the pool idles, and the retirement of the sessions the pool
used itself (rlm_sandbox.pool)."""

from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import Future
from typing import Deque, Dict, Iterable, List, Optional, Set, Tuple

from .contexts import ContextFiles
from .errors import ProtocolError, SandboxUnavailable
from .prelude import PreludeFile
from .process import JSONDict, SessionProcess
from .session import Session

# How long after a claim its replacement starts. Starting a standby (a
# process spawned here, a sandbox created: milliseconds of CPU on every
# core, and this process's GIL) while the claim's first requests run
# would take the cores from them: the claim is interactive within a few
# ms, then the refill runs. Claims in a burst share one delay (the first
# claim's), so refilling never waits on a steady stream of claims.
REFILL_DELAY = 0.025
# How long `close` lets one standby take to remove its sandbox before a
# SIGTERM (then SIGKILL): end of input normally takes ~0.1 s.
CLOSE_GRACE = 10.0


def _ignore_call(event: JSONDict) -> None:
    """A standby makes no calls: one arriving before its claim is a bug."""
    raise ProtocolError(f"a standby sent a call before its claim: {event!r:.200}")


class Keeper:
    """The pool's standbys and its refill thread. Holds no Pool, so a Pool
    that is dropped is collected (its finalizer closes this)."""

    def __init__(
        self, argv: List[str], env: Dict[str, str], size: int, idle_timeout: float, prelude: Optional[PreludeFile]
    ) -> None:
        self.argv, self.env, self.size, self.idle_timeout = argv, env, size, idle_timeout
        self.prelude = prelude
        self.cond = threading.Condition()
        self.ready: Deque[SessionProcess] = collections.deque()
        # Each standby's context directory, made (off the claims' path) and
        # owned by it from its start: it removes it at its end.
        self.files: Dict[SessionProcess, ContextFiles] = {}
        self.starting: Set[SessionProcess] = set()
        self.closed = False
        self.target = size
        self.last_claim = time.monotonic()
        # No refill starts before this (a claim sets it REFILL_DELAY ahead,
        # unless an earlier claim's delay is still running).
        self.refill_at = 0.0
        self.refill_delay = REFILL_DELAY
        self.failed: Optional[str] = None
        self.started = 0
        # The sessions the pool used itself (`run`), ending (their input
        # closed) off the caller's path, with their context files;
        # `close` waits for them.
        self.retiring: List[Tuple[SessionProcess, ContextFiles]] = []
        # Used sessions handed to the refill thread to retire (`retire_later`).
        self.to_retire: List[Session] = []
        # Starts overlap (a runsc start is mostly waiting), but not beyond
        # what the cores can keep busy.
        self.parallel = max(1, min(size, 2 * (os.cpu_count() or 1)))
        self.thread = threading.Thread(target=self._refill, name="rlm-sandbox-pool", daemon=True)
        self.thread.start()

    # -- the refill thread ---------------------------------------------------

    def _refill(self) -> None:
        while True:
            drop: List[SessionProcess] = []
            used: List[Session] = []
            with self.cond:
                while not self.closed:
                    if self.to_retire:
                        used = list(self.to_retire)
                        break
                    now = time.monotonic()
                    idle_end = self.last_claim + self.idle_timeout
                    if self.target and now >= idle_end:
                        # Idle: end the standbys; the next claim refills.
                        self.target = 0
                        drop += list(self.ready)
                        self.ready.clear()
                        self._forget(drop)
                        self.cond.notify_all()
                        break
                    wanted = self.target - len(self.ready) - len(self.starting)
                    if wanted > 0 and len(self.starting) < self.parallel and self.failed is None:
                        if now >= self.refill_at:
                            break
                        self.cond.wait(self.refill_at - now)
                        continue
                    self.cond.wait(idle_end - now if self.target else None)
                if self.closed and not used:
                    return
            if used:
                for session in used:
                    self.retire(session)
                    with self.cond:
                        self.to_retire.remove(session)
                        self.cond.notify_all()
                continue
            if drop:
                _end_all(drop)
                continue
            self._start_one()

    def _start_one(self) -> None:
        files = ContextFiles()
        try:
            argv = self.argv + ["--owned-context-dir", files.directory()]
            process = SessionProcess(
                argv, self.env, _ignore_call, pass_fds=self.prelude.pass_fds() if self.prelude else ()
            )
        except OSError as e:
            files.close()
            with self.cond:
                self.failed = f"the standby could not be started: {e}"
                self.cond.notify_all()
            return
        with self.cond:
            closed = self.closed
            if not closed:
                self.files[process] = files
                self.starting.add(process)
        if closed:
            process.terminate(CLOSE_GRACE)
            files.close()
            return
        process.first.add_done_callback(lambda future: self._started(process, future))

    def _started(self, process: SessionProcess, future: "Future[JSONDict]") -> None:
        """On the standby's reader thread: its first line arrived (or it
        died). Never waits: a process to end only has its input closed."""
        error = future.exception()
        first = future.result() if error is None else None
        with self.cond:
            self.starting.discard(process)
            keep = not self.closed and first is not None and first.get("event") == "standby"
            if keep:
                self.ready.append(process)
                self.started += 1
            else:
                self._forget([process])
            if not keep and not self.closed:
                why = (first or {}).get("error") if first is not None else None
                self.failed = f"a standby did not start: {why or error}\n{process.stderr_tail()}".rstrip()
            self.cond.notify_all()
        if not keep:
            process.end_input()

    # -- claims --------------------------------------------------------------

    def _forget(self, processes: Iterable[SessionProcess]) -> None:
        """Standbys leaving unclaimed: each removes its own directory at
        its end; this removes it too (the same empty directory)."""
        for process in processes:
            files = self.files.pop(process, None)
            if files is not None:
                files.close()

    def take_files(self, process: SessionProcess) -> ContextFiles:
        """The context directory a standby owns (its claim's Session's)."""
        with self.cond:
            return self.files.pop(process, None) or ContextFiles()

    def take(self) -> Optional[SessionProcess]:
        """A live standby, removed from the pool (None if none is ready);
        wakes the refill thread either way."""
        with self.cond:
            if self.closed:
                raise ValueError("the Pool is closed")
            self.last_claim = now = time.monotonic()
            if self.refill_at <= now:
                self.refill_at = now + self.refill_delay
            self.target = self.size
            self.failed = None  # a claim retries a start that failed
            found = None
            while self.ready:
                process = self.ready.popleft()
                if process.dead is None and process.alive():
                    found = process
                    break
                self._forget([process])
                process.end_input()
            self.cond.notify_all()
            return found

    def wait_full(self, timeout: Optional[float]) -> bool:
        with self.cond:
            full = self.cond.wait_for(
                lambda: self.closed or self.failed is not None or len(self.ready) >= self.target, timeout
            )
            if self.failed is not None:
                raise SandboxUnavailable(self.failed)
            return bool(full) and not self.closed

    def retire_later(self, session: Session) -> None:
        """`retire` on the refill thread: its input's close (which wakes
        the session process) and the reaping of earlier ones
        are off the caller's path too. `close` retires what is left."""
        with self.cond:
            if not self.closed:
                self.to_retire.append(session)
                self.cond.notify_all()
                return
        self.retire(session)

    def wait_retired(self, timeout: Optional[float]) -> bool:
        """Until every session given to `retire_later` has been retired."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.to_retire, timeout)

    def retire(self, session: Session) -> None:
        """Ends a session the pool used (a `run`'s) without waiting: its
        input is closed and it removes its sandbox (and its context
        directory) on its own: no request, no thread, no file removed on
        the caller's path. Those that exited are reaped at the next retire;
        `close` waits for the rest."""
        process, files = session._end_input()
        late = None
        with self.cond:
            alive = [p.alive() for p, _ in self.retiring]
            release = [f for (_, f), a in zip(self.retiring, alive) if not a]
            self.retiring = [pf for pf, a in zip(self.retiring, alive) if a]
            if process is None:
                release.append(files)
            elif self.closed:
                late = process  # close has waited already: wait here
                release.append(files)
            else:
                self.retiring.append((process, files))
        if late is not None:
            late.terminate(CLOSE_GRACE)
        for done in release:
            done.close()  # removed by its session already: nothing left to remove

    def close(self) -> None:
        """Ends every standby held (ready or starting) and waits for each
        to remove its sandbox. Idempotent; safe from a finalizer."""
        with self.cond:
            self.closed = True
            held = list(self.ready) + list(self.starting)
            self.ready.clear()
            self.starting.clear()
            self._forget(held)
            retiring, self.retiring = self.retiring, []
            self.cond.notify_all()
        _end_all(held)
        for process, files in retiring:
            process.terminate(CLOSE_GRACE)
            files.close()
        if self.thread is not threading.current_thread():
            self.thread.join()
        with self.cond:
            used, self.to_retire = self.to_retire, []
        for session in used:
            self.retire(session)  # closed: waits for its removal
        if self.prelude is not None:
            self.prelude.close()


def _end_all(processes: Iterable[SessionProcess]) -> None:
    """End of input to all at once (each removes its sandbox in parallel),
    then wait for each."""
    processes = list(processes)
    for process in processes:
        process.end_input()
    for process in processes:
        process.terminate(CLOSE_GRACE)
