"""Contexts inside the sandbox: `ctx`/`ctxs` handles over an mmap of each
context file, and the values `context_N` hold."""

from __future__ import annotations

import mmap
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Any, Iterator, Optional, Union


# --- Contexts ------------------------------------------------------------------------

#: Chunk for counting newlines without copying a whole file.
_COUNT_CHUNK = 16 << 20
#: Longest `text` search_lines returns for one line (a window around the match).
_LINE_TEXT_MAX = 4096


def _decode(data: bytes) -> str:
    """Bytes of a context as text: UTF-8, undecodable bytes replaced."""
    return data.decode("utf-8", "replace")


def _regex(pattern: Union[str, bytes, re.Pattern[Any]], ignore_case: bool) -> re.Pattern[bytes]:
    """A bytes regex (the file is bytes): str patterns are UTF-8 encoded,
    so classes like \\w and [é] are byte-wise. ^ and $ match at lines.
    `re` is imported at the first search, not at every sandbox's start."""
    import re

    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    if isinstance(pattern, re.Pattern):
        flags |= pattern.flags & (re.IGNORECASE | re.DOTALL | re.VERBOSE)
        pattern = pattern.pattern
    if isinstance(pattern, str):
        pattern = pattern.encode("utf-8")
    if not isinstance(pattern, bytes):
        raise TypeError("pattern must be str or bytes, not %s" % type(pattern).__name__)
    return re.compile(pattern, flags)


def _limit(max_results: Optional[int]) -> int:
    """`max_results` as a count; None is no limit."""
    if max_results is None:
        return sys.maxsize
    return max(0, int(max_results))


class ContextFile:
    """A read-only handle on one context file (`ctx`, `ctxs[i]`), over an
    mmap of it: nothing is loaded, so a context of gigabytes is searched
    and read in pieces in little memory. Offsets and lengths are bytes;
    text is decoded as UTF-8 with undecodable bytes replaced."""

    __slots__ = ("_index", "_path", "_format", "_size", "_buf")
    _index: int
    _path: str
    _format: str
    _size: int
    _buf: Union[mmap.mmap, bytes]

    def __init__(self, index: int, path: str, fmt: str, size: int, buf: Union[mmap.mmap, bytes]) -> None:
        for name, value in (("_index", index), ("_path", path), ("_format", fmt), ("_size", size), ("_buf", buf)):
            object.__setattr__(self, name, value)

    @classmethod
    def open(cls, index: int, path: str, fmt: str) -> "ContextFile":
        """Maps the file (an empty file cannot be mapped: it reads as b"")."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf: Union[mmap.mmap, bytes] = b""
            if size:
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(index, path, fmt, size, buf)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("context handles are read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("context handles are read-only")

    def __repr__(self) -> str:
        return "<context %d: %s, %s, %d bytes>" % (self._index, self._path, self._format, self._size)

    def __len__(self) -> int:
        return self._size

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self._size

    @property
    def index(self) -> int:
        return self._index

    @property
    def path(self) -> str:
        return self._path

    @property
    def format(self) -> str:
        """"text" or "json": how the context was given."""
        return self._format

    def raw(self) -> bytes:
        """The whole file as bytes (loads it: only for contexts that fit)."""
        return bytes(self._buf[:])

    def read(self, start: int, length: int) -> str:
        """`length` bytes from byte offset `start`, as text."""
        start, length = int(start), int(length)
        if length < 0:
            raise ValueError("length must not be negative")
        start = min(max(start, 0), self._size)
        return _decode(self._buf[start:start + length])

    def head(self, n: int = 2000) -> str:
        """The first `n` bytes, as text."""
        return self.read(0, n)

    def tail(self, n: int = 2000) -> str:
        """The last `n` bytes, as text."""
        n = max(int(n), 0)
        return self.read(max(self._size - n, 0), n)

    def snippet(self, offset: int, window: int = 500) -> str:
        """`window` bytes on each side of byte offset `offset`, as text."""
        offset, window = int(offset), max(int(window), 0)
        start = max(offset - window, 0)
        return self.read(start, max(offset + window - start, 0))

    def search(self, pattern: Union[str, bytes], max_results: Optional[int] = 10,
               ignore_case: bool = False) -> list[dict[str, Any]]:
        """Matches of the regex `pattern`: [{"offset": byte offset, "match": text}]."""
        regex, limit = _regex(pattern, ignore_case), _limit(max_results)
        found: list[dict[str, Any]] = []
        if not limit:
            return found
        for m in regex.finditer(self._buf):
            found.append({"offset": m.start(), "match": _decode(m.group(0))})
            if len(found) >= limit:
                break
        return found

    def search_lines(self, pattern: Union[str, bytes], max_results: Optional[int] = 10,
                     ignore_case: bool = False) -> list[dict[str, Any]]:
        """Lines with a match of `pattern`, one entry per line:
        [{"line": number from 1, "offset": byte offset of text, "text": the
        line}]; a line longer than 4 KiB is cut to a window around the match."""
        regex, limit = _regex(pattern, ignore_case), _limit(max_results)
        found: list[dict[str, Any]] = []
        pos, line, counted = 0, 1, 0
        while len(found) < limit and pos <= self._size:
            m = regex.search(self._buf, pos)
            if m is None:
                break
            begin, end = self._line_bounds(m.start())
            line += self._count_newlines(counted, begin)
            counted = begin
            lo, hi = self._text_window(begin, end, m.start())
            text = _decode(self._buf[lo:hi])
            found.append({"line": line, "offset": lo, "text": text[:-1] if text.endswith("\r") else text})
            pos = end + 1
        return found

    def iter_lines(self, start: int = 0) -> Iterator[str]:
        """The lines from byte offset `start` on, without their "\\n"."""
        pos = min(max(int(start), 0), self._size)
        while pos < self._size:
            end = self._buf.find(b"\n", pos)
            if end < 0:
                end = self._size
            text = _decode(self._buf[pos:end])
            yield text[:-1] if text.endswith("\r") else text
            pos = end + 1

    def _line_bounds(self, offset: int) -> tuple[int, int]:
        """(start, end) of the line holding byte `offset`; end is its "\\n" or the file's end."""
        begin = self._buf.rfind(b"\n", 0, offset) + 1
        end = self._buf.find(b"\n", offset)
        return begin, (self._size if end < 0 else end)

    @staticmethod
    def _text_window(begin: int, end: int, at: int) -> tuple[int, int]:
        """The part of line [begin, end) search_lines returns: all of it, or
        _LINE_TEXT_MAX bytes around `at`."""
        if end - begin <= _LINE_TEXT_MAX:
            return begin, end
        lo = max(begin, at - _LINE_TEXT_MAX // 2)
        return lo, min(end, lo + _LINE_TEXT_MAX)

    def _count_newlines(self, start: int, end: int) -> int:
        """Newlines in [start, end), a chunk at a time (no whole-file copy)."""
        total = 0
        while start < end:
            stop = min(start + _COUNT_CHUNK, end)
            total += self._buf[start:stop].count(b"\n")
            start = stop
        return total


class ContextError(Exception):
    """A context that cannot be opened or parsed: the message says which and why."""


def _human(size: int) -> str:
    """A size for people."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return "%.1f %s" % (size / scale, unit)
    return "%d bytes" % size


def not_loaded_text(name: str, handle: str, size: int, max_load: int) -> str:
    """What a context's name holds when the context is above max_load_bytes:
    what happened, and how to read it anyway."""
    return (
        "[{name} is not loaded: it is {size} bytes ({human}), above the sandbox's load limit of "
        "{limit} bytes. Read it through {h}, a handle on the file: {h}.size, {h}.head(n), "
        "{h}.tail(n), {h}.read(start, length), {h}.snippet(offset, window), {h}.search(pattern), "
        "{h}.search_lines(pattern), {h}.iter_lines(start)]"
    ).format(name=name, size=size, human=_human(size), limit=max_load, h=handle)


def load_value(handle: ContextFile) -> Any:
    """A context's value: the text, or the parsed JSON."""
    data = handle.raw()
    if handle.format != "json":
        return _decode(data)
    try:
        import json  # the real module: its errors, as the user knows them

        return json.loads(data)
    except ValueError as e:
        raise ContextError("context %d (%s) is not valid JSON: %s" % (handle.index, handle.path, e)) from None


def open_context(spec: Any) -> ContextFile:
    """The handle for a context as `hello`/`add_context` describe it."""
    if not isinstance(spec, dict):
        raise ContextError("a context must be an object")
    index, path, fmt = spec.get("index"), spec.get("path"), spec.get("format", "text")
    if not isinstance(index, int) or index < 0 or not isinstance(path, str):
        raise ContextError("a context needs an index (int) and a path (str)")
    if fmt not in ("text", "json"):
        raise ContextError("context %d has an unknown format %r" % (index, fmt))
    try:
        return ContextFile.open(index, path, fmt)
    except (OSError, ValueError) as e:
        raise ContextError("cannot open context %d at %s: %s" % (index, path, getattr(e, "strerror", None) or e)) from None
