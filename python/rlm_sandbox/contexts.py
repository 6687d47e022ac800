"""Contexts given as Python values become private temporary files.

The session bind-mounts a context file into the sandbox
and indexes it for the echo filter when it is added, so the client
removes its temporary file as soon as the session has acknowledged it
(the sandbox still sees the data through the mount's reference to the
file). The private directory itself belongs to the session process
(`--owned-context-dir`), which removes it when it ends: a client killed
with SIGKILL cannot clean up, but its session sees the end of its input
and exits, so nothing the client wrote outlives it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

ContextValue = Union[str, Dict[str, Any], List[Any], "os.PathLike[str]"]


class ContextFiles:
    """A private directory of context files, removed with `close()`."""

    def __init__(self) -> None:
        self._dir: Optional[str] = None
        self._count = 0

    def materialize(self, value: Any) -> Tuple[str, Optional[str], bool]:
        """(host path, format or None, whether it is a temporary file)
        for a context: a path as is; a str as a text file; a dict or list
        as a JSON file."""
        if isinstance(value, os.PathLike):
            path = Path(value)
            if not path.is_file():
                raise FileNotFoundError(f"context {os.fspath(value)!r} is not a file")
            return str(path), None, False
        if isinstance(value, str):
            return self._write(value.encode("utf-8"), ".txt"), "text", True
        if isinstance(value, (dict, list)):
            data = json.dumps(value, ensure_ascii=False).encode("utf-8")
            return self._write(data, ".json"), "json", True
        raise TypeError(
            f"a context must be a path (pathlib.Path), a str, a dict or a list, not {type(value).__name__}; "
            "for a file given as a str path, pass pathlib.Path(it)"
        )

    def directory(self) -> str:
        """The private (0700) directory, created on first use; its name
        starts with `rlm-sandbox-ctx-`, the only kind of directory the
        session agrees to own and remove."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="rlm-sandbox-ctx-")
        return self._dir

    def _write(self, data: bytes, suffix: str) -> str:
        self._count += 1
        path = os.path.join(self.directory(), f"context-{self._count}{suffix}")
        # 0644 inside a 0700 directory: no other host user can reach it,
        # and the sandbox's user can read the mounted file without a copy.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def release(self, path: str) -> None:
        """Removes a temporary file the session has taken."""
        if self._dir is not None and os.path.dirname(path) == self._dir:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
