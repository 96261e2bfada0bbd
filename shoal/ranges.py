"""HTTP byte ranges exactly as RFC 9110 says, without I/O.

One range is served as 206; a syntactically invalid ``Range``, several ranges,
or a stale ``If-Range`` are ignored (a full 200, which RFC 9110 allows);
a range that starts past the end is 416 with ``Content-Range: bytes */size``.
``parse_content_range`` is the client side: what a 206 must say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_MAX_DIGITS = 19


@dataclass(frozen=True, slots=True)
class Span:
    """What to send: ``status`` 200, 206 or 416, and bytes [start, end) of the entity."""

    status: int
    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self) -> str | None:
        if self.status == 206:
            return f"bytes {self.start}-{self.end - 1}/{self.size}"
        if self.status == 416:
            return f"bytes */{self.size}"
        return None


def select(size: int, range_header: str | None, if_range: str | None, etag: str) -> Span:
    """The part of an entity of ``size`` bytes with strong ETag ``etag`` to answer with."""
    full = Span(200, 0, size, size)
    if range_header is None:
        return full
    if if_range is not None and if_range.strip() != etag:
        return full  # the client's copy is stale (or dated): send it all
    m = _RANGE.fullmatch(range_header)
    if m is None or "," in range_header:
        return full
    first, last = m.group(1), m.group(2)
    if (not first and not last) or len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        return full
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return Span(416, 0, 0, size)
        return Span(206, max(0, size - n), size, size)
    start = int(first)
    if last and int(last) < start:
        return full  # invalid: ignored
    if start >= size:
        return Span(416, 0, 0, size)
    end = min(size, int(last) + 1) if last else size
    return Span(206, start, end, size)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/size`` as (a, b + 1, size or None); None if malformed."""
    if value is None:
        return None
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if m is None:
        return None
    start, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < start or (total is not None and last >= total):
        return None
    return start, last + 1, total
