"""BitTorrent HTTP tracker requests and responses (BEP 3, 7, 23, 48), without I/O.

``info_hash`` and ``peer_id`` are raw 20-byte strings percent-encoded in the
query, so queries are parsed from the raw bytes: a decoded ``str`` view would
turn such bytes into U+FFFD. Every problem is a ``TrackerFailure`` whose text
becomes the bencoded ``failure reason``.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from shoal import bencode
from shoal.errors import BadInput

MAX_QUERY = 4096
MAX_SCRAPE_HASHES = 64
NUMWANT_DEFAULT = 50
NUMWANT_CAP = 200
MAX_COUNTER = (1 << 63) - 1
EVENTS = ("", "started", "completed", "stopped", "paused")


class TrackerFailure(BadInput):
    """A request the tracker refuses; ``str(exc)`` is the failure reason sent back."""


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str
    compact: bool
    numwant: int
    no_peer_id: bool
    ip: str | None  # as claimed by the client; honoured only from trusted proxies


@dataclass(frozen=True, slots=True)
class PeerAddr:
    """A peer as a tracker hands it out; ``packed`` is its compact form (BEP 23/7),
    computed once so that answers are a join of stored bytes."""

    ip: str
    port: int
    peer_id: bytes
    packed: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        packed = ipaddress.ip_address(self.ip).packed + struct.pack(">H", self.port)
        object.__setattr__(self, "packed", packed)

    @property
    def v6(self) -> bool:
        return len(self.packed) == 18


def parse_query(raw: bytes) -> dict[bytes, list[bytes]]:
    """Split a raw query string into percent-decoded byte values."""
    if len(raw) > MAX_QUERY:
        raise TrackerFailure("query string too long")
    params: dict[bytes, list[bytes]] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        params.setdefault(unquote_to_bytes(key), []).append(unquote_to_bytes(value))
    return params


def parse_announce(raw: bytes) -> AnnounceRequest:
    """Validate an announce query; raises ``TrackerFailure``."""
    q = parse_query(raw)
    info_hash = _one(q, b"info_hash")
    if len(info_hash) != 20:
        raise TrackerFailure("info_hash must be 20 bytes")
    peer_id = _one(q, b"peer_id")
    if len(peer_id) != 20:
        raise TrackerFailure("peer_id must be 20 bytes")
    port = _int(q, b"port", None, 1, 65535)
    event = _opt(q, b"event", b"").decode("ascii", "replace")
    if event not in EVENTS:
        raise TrackerFailure(f"unknown event {event[:20]!r}")
    ip = _opt(q, b"ip", b"").decode("ascii", "replace") or None
    if ip is not None:
        ip = _valid_ip(ip)
    return AnnounceRequest(
        info_hash=info_hash,
        peer_id=peer_id,
        port=port,
        uploaded=_int(q, b"uploaded", 0, 0, MAX_COUNTER),
        downloaded=_int(q, b"downloaded", 0, 0, MAX_COUNTER),
        left=_int(q, b"left", None, 0, MAX_COUNTER),
        event=event,
        compact=_opt(q, b"compact", b"1") != b"0",
        numwant=min(_int(q, b"numwant", NUMWANT_DEFAULT, 0, 1 << 31), NUMWANT_CAP),
        no_peer_id=_opt(q, b"no_peer_id", b"0") == b"1",
        ip=ip,
    )


def parse_scrape(raw: bytes) -> list[bytes]:
    """The info-hashes of a scrape query (possibly none: scrape everything is refused later)."""
    hashes = parse_query(raw).get(b"info_hash", [])
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise TrackerFailure(f"at most {MAX_SCRAPE_HASHES} info_hash values per scrape")
    for h in hashes:
        if len(h) != 20:
            raise TrackerFailure("info_hash must be 20 bytes")
    return hashes


def normalize_ip(ip: str) -> str:
    """An IPv4-mapped IPv6 address becomes plain IPv4; others are kept in canonical form."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def announce_response(
    peers: Sequence[PeerAddr],
    *,
    complete: int,
    incomplete: int,
    interval: int,
    min_interval: int,
    compact: bool,
    no_peer_id: bool,
) -> bytes:
    """Bencoded announce answer: compact ``peers``/``peers6`` or the dictionary model."""
    body: dict[str, object] = {
        "complete": complete,
        "incomplete": incomplete,
        "interval": interval,
        "min interval": min_interval,
    }
    if compact:
        body["peers"] = b"".join(p.packed for p in peers if not p.v6)
        body["peers6"] = b"".join(p.packed for p in peers if p.v6)
    else:
        body["peers"] = [
            {"ip": p.ip, "port": p.port}
            if no_peer_id
            else {"ip": p.ip, "peer id": p.peer_id, "port": p.port}
            for p in peers
        ]
    return bencode.encode(body)


def scrape_response(stats: Iterable[tuple[bytes, int, int, int]]) -> bytes:
    """Bencoded scrape answer from (info_hash, complete, downloaded, incomplete)."""
    files = {h: {"complete": c, "downloaded": d, "incomplete": i} for h, c, d, i in stats}
    return bencode.encode({"files": files})


def failure(reason: str) -> bytes:
    return bencode.encode({"failure reason": reason})


def _one(q: dict[bytes, list[bytes]], key: bytes) -> bytes:
    values = q.get(key)
    if not values:
        raise TrackerFailure(f"missing {key.decode()}")
    if len(values) > 1:
        raise TrackerFailure(f"{key.decode()} given more than once")
    return values[0]


def _opt(q: dict[bytes, list[bytes]], key: bytes, default: bytes) -> bytes:
    return _one(q, key) if key in q else default


def _int(q: dict[bytes, list[bytes]], key: bytes, default: int | None, lo: int, hi: int) -> int:
    if key not in q:
        if default is None:
            raise TrackerFailure(f"missing {key.decode()}")
        return default
    raw = _one(q, key)
    if not raw.isdigit() or len(raw) > 20:
        raise TrackerFailure(f"{key.decode()} must be a non-negative integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise TrackerFailure(f"{key.decode()} out of range [{lo}, {hi}]")
    return value


def _valid_ip(ip: str) -> str:
    try:
        return normalize_ip(ip)
    except ValueError:
        raise TrackerFailure("ip is not an IP address") from None
