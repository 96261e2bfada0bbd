"""Bandwidth caps of an agent and their schedule, applied live.

A schedule line reads ``KIND RATE HH:MM-HH:MM``: KIND is ``upload`` (seeding and a pull's
upload), ``download`` (per source kind: each pull's BitTorrent download, and HTTP) or
``http`` (everything fetched from edges and the origin, all pulls together, so edges are
protected; the lower of it and ``download`` holds for HTTP); RATE a size per second
(``50MB/s``, ``20M``) or ``unlimited``. A window that ends before it starts runs over
midnight. Outside every window the base cap holds; where windows overlap, the later line
wins. Times are the host's local time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from peer.throttle import Throttle
from shoal.errors import BadInput
from shoal.units import parse_size

KINDS = ("upload", "download", "http")
_LINE = re.compile(r"(\w+)\s+(\S+)\s+(\d\d):(\d\d)-(\d\d):(\d\d)")


@dataclass(frozen=True, slots=True)
class Caps:
    """Bytes per second; 0 = unlimited."""

    upload: int = 0
    download: int = 0
    http: int = 0

    def __post_init__(self) -> None:
        if min(self.upload, self.download, self.http) < 0:
            raise ValueError("caps must be >= 0")


@dataclass(frozen=True, slots=True)
class Window:
    kind: str
    rate: int
    start: int  # minute of the day, inclusive
    end: int  # minute of the day, exclusive

    def covers(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_rate(text: str) -> int:
    t = text.strip()
    if t.lower() in ("unlimited", "0", "none"):
        return 0
    return parse_size(t.removesuffix("/s"))


def valid_rate(value: str) -> str:
    """``value`` if ``parse_rate`` takes it, else ``ValueError`` (a settings validator)."""
    try:
        parse_rate(value)
    except BadInput as exc:
        raise ValueError(exc.message) from None
    return value


def parse_schedule(lines: Iterable[str]) -> tuple[Window, ...]:
    out = []
    for line in lines:
        m = _LINE.fullmatch(line.strip())
        hint = 'write e.g. "upload 50MB/s 08:00-20:00" (kinds: upload, download, http)'
        if m is None or m.group(1) not in KINDS:
            raise BadInput(f"invalid schedule line {line!r}", hint)
        h1, m1, h2, m2 = (int(m.group(i)) for i in range(3, 7))
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise BadInput(f"invalid time in schedule line {line!r}", hint)
        try:
            rate = parse_rate(m.group(2))
        except BadInput as exc:
            raise BadInput(f"{exc.message} in schedule line {line!r}", hint) from None
        out.append(Window(m.group(1), rate, h1 * 60 + m1, h2 * 60 + m2))
    return tuple(out)


def caps_at(base: Caps, windows: Iterable[Window], minute: int) -> Caps:
    caps = base
    for w in windows:
        if w.covers(minute):
            caps = replace(caps, **{w.kind: w.rate})
    return caps


def _local_minute() -> int:
    t = time.localtime()
    return t.tm_hour * 60 + t.tm_min


class LiveCaps:
    """The caps in force now; ``http`` is the token bucket every pull's HTTP fetches share,
    re-rated whenever the caps are read."""

    def __init__(
        self,
        base: Caps,
        windows: tuple[Window, ...] = (),
        minute: Callable[[], int] = _local_minute,
    ) -> None:
        self.base = base
        self.windows = windows
        self.minute = minute
        self.http = Throttle(base.http)
        self.now()

    def now(self) -> Caps:
        caps = caps_at(self.base, self.windows, self.minute())
        http = min((r for r in (caps.download, caps.http) if r), default=0)
        if http != self.http.rate:
            self.http.set_rate(http)
        return caps
