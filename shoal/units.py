"""Byte sizes as users write them (``4MiB``, ``64M``, ``1.5GB``) and as we show them."""

from __future__ import annotations

import re

from shoal.errors import InvalidSize

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(i?)B?\s*", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_size(text: str) -> int:
    """Parse a byte size; ``K``/``KiB`` are 1024, ``KB`` is 1000 (a bare ``K`` or ``M``
    means binary units, as tools like aria2 and nginx read them). Raises ``InvalidSize``."""
    m = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InvalidSize(f"invalid size {text!r}", "write e.g. 4MiB, 512K, 2GB or 1048576")
    number, unit, binary = m.group(1), m.group(2).upper(), m.group(3)
    decimal_suffix = unit and not binary and text.strip().upper().endswith("B")
    base = 1000 if decimal_suffix else 1024
    value = float(number) * base ** _POWERS[unit]
    if value != int(value):
        raise InvalidSize(f"size {text!r} is not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """Human form with binary units, e.g. ``4.0 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
