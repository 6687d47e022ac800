"""The frames of docs/PROTOCOL.md: encoding, strict reading, and the
channel that writes them whole to the host."""

from __future__ import annotations

import os
import struct

from . import cjson, sync
from .interrupts import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Callable, Optional


# --- Framing ---------------------------------------------------------------

#: Frame types (the body's first byte).
JSON = 0x4A
STDOUT = 0x31
STDERR = 0x32

#: Largest output chunk sent in one frame.
CHUNK = 64 << 10
#: Host frames above this are refused: the agent exits (the host never
#: sends anything near it; a bigger length means a broken channel).
MAX_HOST_FRAME = 64 << 20
#: The host's limit on agent frames when `hello` does not say.
DEFAULT_MAX_FRAME = (8 << 20) + (64 << 10)
DEFAULT_MAX_LOAD_BYTES = 64 << 20
DEFAULT_MAX_PROMPT_BYTES = 4 << 20
#: The host's output ceiling per cell unless `hello` says otherwise.
DEFAULT_MAX_OUTPUT_BYTES = 256 << 20
#: Private descriptors start here, out of the way of user code's files.
PRIVATE_FD_MIN = 100
#: Room kept free in a frame for the envelope of a message (ids, keys).
FRAME_SLACK = 256

_HEADER = struct.Struct(">IB")
_LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """A frame that breaks the protocol: the channel cannot be trusted after it."""


class FrameTooLarge(ValueError):
    """A message that would exceed the host's `max_frame`: sending it would end the session."""


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One whole frame: u32 big-endian length of the body, the type byte, the payload."""
    return _HEADER.pack(len(payload) + 1, kind) + payload


def encode_json(value: Any) -> bytes:
    """JSON as the host accepts it: UTF-8 (lone surrogates replaced, since
    they are not valid UTF-8), no NaN or infinities (not JSON)."""
    text = cjson.dumps(value, separators=(",", ":"))
    return text.encode("utf-8", "replace")


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes; fewer only at end of stream."""
    parts = []
    left = n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(stream: BinaryIO, max_len: int = MAX_HOST_FRAME) -> Optional[tuple[int, bytes]]:
    """The next frame as (type, payload); None at end of stream between
    frames. The length is checked before the body is read, so a hostile or
    broken length never allocates."""
    header = _read_exactly(stream, 4)
    if not header:
        return None
    if len(header) < 4:
        raise EOFError("the channel ended inside a frame header")
    (length,) = struct.unpack(">I", header)
    if length == 0:
        raise FrameError("an empty frame")
    if length > max_len:
        raise FrameError("a frame of %d bytes; the limit is %d" % (length, max_len))
    body = _read_exactly(stream, length)
    if len(body) < length:
        raise EOFError("the channel ended inside a frame")
    return body[0], body[1:]


class FrameReader:
    """Host frames from a descriptor, read with os.read into a buffer of
    its own, so that the reading can change hands between threads (the
    main thread between messages, the reader thread during one): whoever
    holds it sees what is already buffered, and nothing is lost in a
    stream object's private buffer. One reader at a time (the caller's
    protocol ensures it)."""

    def __init__(self, fd: int, max_len: int = MAX_HOST_FRAME) -> None:
        self.fd = fd
        self.max_len = max_len
        self._buf = bytearray()

    def next(self) -> Optional[tuple[int, bytes]]:
        """The next whole buffered frame as (type, payload), or None. The
        length is checked as soon as it is buffered: a hostile or broken
        length is refused before its body is read."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _LENGTH.unpack_from(buf)
        if length == 0:
            raise FrameError("an empty frame")
        if length > self.max_len:
            raise FrameError("a frame of %d bytes; the limit is %d" % (length, self.max_len))
        if len(buf) < 4 + length:
            return None
        kind, payload = buf[4], bytes(buf[5:4 + length])
        del buf[:4 + length]
        return kind, payload

    def fill(self) -> None:
        """Reads what the host has sent (blocking until it sent something);
        EOFError when it closed its end."""
        data = os.read(self.fd, CHUNK)
        if not data:
            raise EOFError("the channel ended" + (" inside a frame" if self._buf else ""))
        self._buf += data

    def pending(self) -> bool:
        """Whether the host has sent more than was handled (the start of a
        next frame, at least, is buffered)."""
        return bool(self._buf)

    def read(self) -> tuple[int, bytes]:
        """The next frame, reading as needed; EOFError at the end."""
        while True:
            frame = self.next()
            if frame is not None:
                return frame
            self.fill()


# --- The frame channel to the host --------------------------------------------


class Channel:
    """Agent → host frames. Every frame is written whole under one lock
    (os.write may write part of a buffer), so frames from the watchdog,
    callers in threads and the main thread never interleave."""

    def __init__(self, fd: int, on_broken: Callable[[str], None]) -> None:
        self.fd = fd
        self.max_frame = DEFAULT_MAX_FRAME
        self._lock = sync.Token()
        self._on_broken = on_broken
        #: Whole frames that go out first with the next write (`later`).
        self.held = b""

    @protocol
    def send(self, kind: int, payload: bytes, before: bytes = b"") -> None:
        """Writes one frame, after the held frames and the whole frames
        `before` (one write for all: a system call and a wake-up of the
        host saved); a broken channel means the host is gone."""
        frame = before + encode_frame(kind, payload)
        with self._lock:
            self._write(frame)

    @protocol
    def later(self, msg: dict[str, Any]) -> None:
        """Holds `msg` (a J frame) to go out first with the next frame sent,
        or at `send_held`."""
        frame = self._encode(msg)
        with self._lock:
            self.held += frame

    @protocol
    def send_held(self) -> None:
        """Writes the held frames now, if any."""
        if self.held:
            with self._lock:
                if self.held:
                    self._write(b"")

    def _write(self, frames: bytes) -> None:
        """Writes the held frames and `frames` (under the lock)."""
        data, self.held = memoryview(self.held + frames), b""
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as e:
            self._on_broken("the frame channel to the host broke: %s" % e)

    @protocol
    def send_json(self, msg: dict[str, Any], before: bytes = b"") -> None:
        """Sends `msg` as a J frame (after the frames `before`);
        FrameTooLarge instead of a frame the host would refuse."""
        frame = self._encode(msg)
        with self._lock:
            self._write(before + frame)

    def _encode(self, msg: dict[str, Any]) -> bytes:
        """`msg` as a J frame; FrameTooLarge instead of a frame the host
        would refuse."""
        payload = encode_json(msg)
        if len(payload) + 1 > self.max_frame:
            raise FrameTooLarge(
                "a %r message of %d bytes is above the frame limit of %d"
                % (msg.get("t"), len(payload) + 1, self.max_frame)
            )
        return encode_frame(JSON, payload)
