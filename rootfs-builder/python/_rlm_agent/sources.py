"""The sources of cells and scripts, for the tracebacks that show their lines.

CPython's tracebacks (the agent's, `traceback`, `logging`, `warnings`)
read source lines from `linecache.cache`. Importing linecache at the
agent's start would cost every sandbox ~4 ms (linecache imports tokenize,
whose import compiles regular expressions: `re`, `enum`) for tracebacks
most sandboxes never print. So until linecache is imported the sources
wait here, and a finder first on `sys.meta_path` sees its import (by the
agent formatting an error, or by user code), lets the real import run,
and puts them in `linecache.cache` before anyone can read it; from then on
a source goes straight there. The finder leaves `sys.meta_path` then.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Optional, Sequence

    #: A linecache.cache entry: (size, mtime, lines, fullname); mtime None
    #: marks an entry linecache.checkcache must leave alone.
    Entry = tuple[int, Optional[float], list[str], str]


class Sources:
    """Sources by file name (`<cell N>`, the script's file), in linecache
    once it is imported, here until then."""

    def __init__(self) -> None:
        self._cache: dict[str, Entry] = {}
        linecache = sys.modules.get("linecache")
        if linecache is not None:
            self._cache = linecache.cache
        else:
            sys.meta_path.insert(0, _Finder(self))

    def put(self, filename: str, code: str) -> None:
        """Keeps `code` as the source of `filename`."""
        self._cache[filename] = (len(code), None, code.splitlines(True), filename)

    def drop(self, filename: str) -> None:
        """Forgets the source of `filename`."""
        self._cache.pop(filename, None)

    def _attach(self, cache: dict[str, Entry]) -> None:
        """linecache was just imported: its cache holds the sources from now
        on. It takes over first, then gets what was kept, without replacing
        a source put meanwhile (linecache may be imported by a user thread
        while the main thread starts a cell)."""
        kept, self._cache = self._cache, cache
        for filename, entry in list(kept.items()):
            cache.setdefault(filename, entry)


_SHARED: list[Sources] = []


def shared() -> Sources:
    """The interpreter's one Sources: the agent's cells and script, and the
    code a client's setup defines (rlm_sandbox.dspy's support module), with
    one finder on sys.meta_path for them all."""
    if not _SHARED:
        _SHARED.append(Sources())
    return _SHARED[0]


class _Finder:
    """On sys.meta_path until linecache is imported; finds nothing itself."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Any:
        """linecache's spec as the next finder gives it, its loader wrapped."""
        if name != "linecache":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = None if finder is self or find is None else find(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, self)
                return spec
        return None


class _Loader:
    """linecache's own loader, then the sources handed over; the module
    is left naming its own loader, as if nothing had been in between."""

    def __init__(self, real: Any, finder: _Finder) -> None:
        self.real, self.finder = real, finder

    def create_module(self, spec: Any) -> Any:
        """What the real loader creates (None: the default module)."""
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Runs linecache, then moves the sources into its cache."""
        module.__loader__ = self.real
        if module.__spec__ is not None:
            module.__spec__.loader = self.real
        self.real.exec_module(module)
        self.finder.sources._attach(module.cache)
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
