"""Lines from piped standard input: decoded leniently and bounded in size.

Bytes that are not UTF-8 become lone surrogates (which the command check refuses with one
line) instead of a UnicodeDecodeError that would end the session; a line longer than the
bound is skipped to its end and reported by its size, so a megabyte of input costs a
megabyte of reading, never a megabyte of parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 16


@dataclass(frozen=True)
class TooLong:
    """A line that was skipped: `size` bytes long, over the bound."""

    size: int


def line_bound(request_chars: int) -> int:
    """Bytes a console line may have: room for the longest request in 4-byte UTF-8."""
    return max(4 * request_chars + 1024, CHUNK)


def read_line(stream: BinaryIO, limit: int) -> str | TooLong | None:
    """The next line (with its newline), a TooLong, or None at the end of input."""
    data = stream.readline(limit + 1)
    if not data:
        return None
    if len(data) <= limit or data.endswith(b"\n"):
        return data.decode("utf-8", errors="surrogateescape")
    size = len(data)
    while True:
        chunk = stream.readline(CHUNK)
        size += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return TooLong(size)
