"""Bencoding (BEP 3), strict and bounded.

``decode`` accepts only canonical input (sorted unique byte-string keys, no
leading zeros, no ``-0``), so ``encode(decode(b)) == b`` and a hash taken over a
re-encoding equals the hash over the original bytes. Input size, nesting depth
and item count are bounded; every failure is a ``BencodeError`` (bad input), which
a caller may map into a more precise one (a torrent's: ``InvalidTorrent``).
"""

from __future__ import annotations

from typing import Any

from shoal.errors import BadInput

Bencodable = int | bytes | str | list[Any] | dict[bytes, Any] | dict[str, Any]


class BencodeError(BadInput):
    """Input is not canonical bencoding, or exceeds a limit."""


def encode(value: Any) -> bytes:
    """Encode ints, bytes, str (as UTF-8), lists and dicts (keys bytes or str, sorted)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = [(k.encode() if isinstance(k, str) else bytes(k), v) for k, v in value.items()]
        items.sort(key=lambda kv: kv[0])
        out.append(b"d")
        for k, v in items:
            _encode(k, out)
            _encode(v, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(
    data: bytes, *, max_size: int = 64 << 20, max_depth: int = 64, max_items: int = 1 << 22
) -> Any:
    """Decode one value that spans all of ``data``; dict keys come back as bytes."""
    if len(data) > max_size:
        raise BencodeError(f"input is larger than {max_size} bytes")
    dec = _Decoder(bytes(data), max_depth, max_items)
    value = dec.value(0)
    if dec.pos != len(dec.data):
        raise BencodeError(f"trailing bytes after position {dec.pos}")
    return value


class _Decoder:
    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.items_left = max_items

    def value(self, depth: int) -> Any:
        if depth > self.max_depth:
            raise BencodeError("nesting too deep")
        self.items_left -= 1
        if self.items_left < 0:
            raise BencodeError("too many items")
        c = self.data[self.pos : self.pos + 1]
        if c == b"i":
            return self.integer()
        if c == b"l":
            self.pos += 1
            items = []
            while self.peek() != b"e":
                items.append(self.value(depth + 1))
            self.pos += 1
            return items
        if c == b"d":
            self.pos += 1
            result: dict[bytes, Any] = {}
            last: bytes | None = None
            while self.peek() != b"e":
                key = self.string()
                if last is not None and key <= last:
                    raise BencodeError("dictionary keys unsorted or repeated")
                last = key
                result[key] = self.value(depth + 1)
            self.pos += 1
            return result
        if c.isdigit():
            return self.string()
        raise BencodeError(f"unexpected byte {c!r} at position {self.pos}")

    def peek(self) -> bytes:
        c = self.data[self.pos : self.pos + 1]
        if not c:
            raise BencodeError("unexpected end of input")
        return c

    def integer(self) -> int:
        end = self.data.find(b"e", self.pos)
        if end < 0 or end - self.pos > 32:
            raise BencodeError(f"unterminated integer at position {self.pos}")
        text = self.data[self.pos + 1 : end]
        if not _canonical_int(text):
            raise BencodeError(f"non-canonical integer {text[:20]!r}")
        self.pos = end + 1
        return int(text)

    def string(self) -> bytes:
        colon = self.data.find(b":", self.pos, self.pos + 12)
        if colon < 0:
            raise BencodeError(f"bad string length at position {self.pos}")
        text = self.data[self.pos : colon]
        if not text.isdigit() or (len(text) > 1 and text[:1] == b"0"):
            raise BencodeError(f"bad string length at position {self.pos}")
        n = int(text)
        start = colon + 1
        if start + n > len(self.data):
            raise BencodeError("string runs past end of input")
        self.pos = start + n
        return self.data[start : self.pos]


def _canonical_int(text: bytes) -> bool:
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit():
        return False
    return not (digits[:1] == b"0" and (len(digits) > 1 or text[:1] == b"-"))
