"""A session's prelude as the binary reads it (`--prelude-file`): code the
sandbox runs before the session is handed out (docs/PROTOCOL.md,
"Prelude"), so a pool's standbys have done it before their claim.

The source travels in a sealed memfd passed to the `rlm-sandbox session`
process as `/proc/self/fd/N`: no file is left behind when the owner is
killed, and the seals (no write, grow or shrink) mean no process that
inherits the descriptor can change what later standbys run."""

from __future__ import annotations

import fcntl
import os
from typing import List, Optional

# src/session/prelude.rs: MAX_PRELUDE_BYTES.
MAX_PRELUDE_BYTES = 1 << 20
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class PreludeFile:
    """The prelude's sealed memfd, open until `close`."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError(f"prelude must be Python source (a str), not {type(source).__name__}")
        data = source.encode("utf-8")
        if len(data) > MAX_PRELUDE_BYTES:
            raise ValueError(f"prelude is {len(data)} bytes; at most {MAX_PRELUDE_BYTES} bytes of Python source")
        self.source = source
        self.fd: Optional[int] = os.memfd_create("rlm-sandbox-prelude", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, _SEALS)
        except BaseException:
            self.close()
            raise

    def flags(self) -> List[str]:
        """The command-line flags that name it (the fd must be passed)."""
        if self.fd is None:
            raise ValueError("the prelude file is closed")
        return ["--prelude-file", f"/proc/self/fd/{self.fd}"]

    def pass_fds(self) -> List[int]:
        return [] if self.fd is None else [self.fd]

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
