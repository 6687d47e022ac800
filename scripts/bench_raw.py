"""The raw-runtime baseline the benchmarks compare rlm-sandbox against.

`runc run` / `runsc run` on the bundle `rlm-sandbox bundle` writes (the
same config.json, rootfs and code rlm-sandbox runs), with the global flags
rlm-sandbox gives the runtime, so a ratio measures what rlm-sandbox adds
and nothing else. scripts/bench's start-up rows build the same call in
shell; bench_serve.py uses this module.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path
from typing import List

_ids = itertools.count()


class Raw:
    """One runtime, and `slots` bundles of `code` for it: a bundle names
    its own cgroup, so runs at once each need their own."""

    def __init__(self, ours: str, runtime: str, code: str, work: Path, slots: int = 1) -> None:
        path = shutil.which(runtime)
        if path is None:
            raise SystemExit(f"{runtime}: not installed")
        self.runtime, self.path, self.state = runtime, path, work / f"state-{runtime}"
        self.bundles: List[Path] = []
        for k in range(slots):
            out = work / f"{runtime}-{k}"
            subprocess.run([ours, "bundle", "--runtime", runtime, "--output", str(out), "-c", code],
                           check=True, stdout=subprocess.DEVNULL)
            self.bundles.append(out)

    def argv(self, slot: int = 0) -> List[str]:
        """The raw runtime call on bundle `slot`, with a fresh container id."""
        argv = [self.path, "--root", str(self.state), "--log-format", "json"]
        if self.runtime == "runsc":
            argv += ["--oci-seccomp", "--network=none"]
        cid = f"rlms-benchraw-{os.getpid()}-{next(_ids)}"
        return argv + ["run", "--bundle", str(self.bundles[slot]), cid]

    def once(self, slot: int = 0) -> None:
        subprocess.run(self.argv(slot), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
