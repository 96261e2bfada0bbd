"""HTTP byte ranges exactly as RFC 9110 says, without I/O.

One range is served as 206; a syntactically invalid ``Range``, several ranges,
or a stale ``If-Range`` are ignored (a full 200, which RFC 9110 allows);
a range that starts past the end is 416 with ``Content-Range: bytes */size``.
``parse_content_range`` is the client side: what a 206 must say.
"""

from __future__ import annotations

from dataclasses import dataclass

# Longer headers are ignored (answered in full): one range of two 19-digit numbers
# fits in far less. Parsing is a few partitions and strips: linear in the length.
MAX_RANGE_HEADER = 256
_MAX_DIGITS = 19
_DIGITS = frozenset("0123456789")


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
    parsed = _one_range(range_header)
    if parsed is None:
        return full
    first, last = parsed
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


def _number(text: str) -> bool:
    """``text`` is 1 to 19 ASCII digits (``str.isdigit`` also takes other scripts' digits)."""
    return 0 < len(text) <= _MAX_DIGITS and _DIGITS.issuperset(text)


def _one_range(header: str) -> tuple[str, str] | None:
    """``bytes=first-last`` (either side may be empty, not both) as its two digit strings;
    None for anything else, several ranges included. Whitespace around the parts is
    tolerated, as it was by clients seen in the wild."""
    if len(header) > MAX_RANGE_HEADER or "," in header:
        return None
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (not first and not last):
        return None
    if (first and not _number(first)) or (last and not _number(last)):
        return None
    return first, last


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/size`` as (a, b + 1, size or None); None if malformed."""
    if value is None or len(value) > MAX_RANGE_HEADER:
        return None
    unit, space, rest = value.strip().partition(" ")
    span, slash, size = rest.partition("/")
    first, dash, final = span.partition("-")
    if unit != "bytes" or not (space and slash and dash):
        return None
    if not (_number(first) and _number(final) and (size == "*" or _number(size))):
        return None
    start, last = int(first), int(final)
    total = None if size == "*" else int(size)
    if last < start or (total is not None and last >= total):
        return None
    return start, last + 1, total
