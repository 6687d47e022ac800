"""Finding the `rlm-sandbox` binary: RLM_SANDBOX_BIN, then PATH, then a
checkout's target/release (the package's own, or one above the working
directory), so `pip install ./python` in a built checkout just works."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

from .errors import SandboxUnavailable

ENV_VAR = "RLM_SANDBOX_BIN"
_RELEASE = Path("target") / "release" / "rlm-sandbox"


def _checkouts() -> Iterator[Path]:
    """Directories that may be an rlm-sandbox checkout."""
    yield Path(__file__).resolve().parent.parent.parent
    here = Path.cwd().resolve()
    yield here
    yield from here.parents


def find_binary() -> str:
    """The path of the rlm-sandbox binary, or SandboxUnavailable saying how
    to get one."""
    named = os.environ.get(ENV_VAR)
    if named:
        if os.path.isfile(named) and os.access(named, os.X_OK):
            return named
        raise SandboxUnavailable(f"{ENV_VAR}={named!r} is not an executable file; point it at the rlm-sandbox binary")
    found = shutil.which("rlm-sandbox")
    if found:
        return found
    for root in _checkouts():
        candidate = root / _RELEASE
        if (root / "Cargo.toml").is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SandboxUnavailable(
        "the rlm-sandbox binary was not found (looked at $RLM_SANDBOX_BIN, PATH and a checkout's "
        "target/release); build it with `scripts/setup` (as root) in the rlm-sandbox checkout, "
        "or set RLM_SANDBOX_BIN to its path"
    )
