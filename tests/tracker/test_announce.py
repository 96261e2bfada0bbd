import ipaddress
from urllib.parse import quote_from_bytes

import pytest

from shoal.bencode import decode
from tracker.announce import (
    NUMWANT_CAP,
    PeerAddr,
    TrackerFailure,
    announce_response,
    normalize_ip,
    parse_announce,
    parse_scrape,
    scrape_response,
)

IH = bytes(range(20))
PID = b"-LT2110-\xff\xfe\x00abcdefghi"[:20].ljust(20, b"x")


def q(**params: bytes | str | int) -> bytes:
    parts = []
    for k, v in params.items():
        raw = v if isinstance(v, bytes) else str(v).encode()
        parts.append(f"{k}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts).encode()


def good(**over: bytes | str | int) -> bytes:
    params: dict[str, bytes | str | int] = {
        "info_hash": IH,
        "peer_id": PID,
        "port": 6881,
        "uploaded": 0,
        "downloaded": 0,
        "left": 100,
    }
    params.update(over)
    return q(**params)


def test_parses_raw_bytes() -> None:
    req = parse_announce(good(event="started", numwant=10, compact=1))
    assert req.info_hash == IH and req.peer_id == PID
    assert (req.port, req.left, req.event, req.numwant, req.compact) == (
        6881,
        100,
        "started",
        10,
        True,
    )


def test_defaults_and_cap() -> None:
    req = parse_announce(good(numwant=100000))
    assert req.numwant == NUMWANT_CAP
    assert parse_announce(good()).numwant == 50
    assert parse_announce(good(compact=0)).compact is False


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (good(info_hash=b"short"), "info_hash must be 20 bytes"),
        (good(info_hash=b"x" * 21), "info_hash must be 20 bytes"),
        (good(peer_id=b"x"), "peer_id"),
        (good(port=0), "port out of range"),
        (good(port=65536), "port out of range"),
        (good(port="-1"), "port must be"),
        (good(left="-5"), "left must be"),
        (good(left=10**30), "left must be"),
        (good(left=2**63), "left out of range"),
        (good(event="exploded"), "unknown event"),
        (good(ip="not-an-ip"), "ip is not"),
        (q(peer_id=PID, port=1, left=0), "missing info_hash"),
        (q(info_hash=IH, peer_id=PID, port=1), "missing left"),
        (good() + b"&info_hash=" + quote_from_bytes(IH).encode(), "more than once"),
        (b"x" * 5000, "too long"),
    ],
)
def test_rejects(query: bytes, words: str) -> None:
    with pytest.raises(TrackerFailure, match=words):
        parse_announce(query)


def test_compact_peers_v4_and_v6() -> None:
    peers = [PeerAddr("10.0.0.1", 6881, PID), PeerAddr("2001:db8::1", 51413, PID)]
    body = decode(
        announce_response(
            peers,
            complete=1,
            incomplete=2,
            interval=1800,
            min_interval=60,
            compact=True,
            no_peer_id=False,
        )
    )
    assert body[b"peers"] == ipaddress.ip_address("10.0.0.1").packed + (6881).to_bytes(2, "big")
    assert body[b"peers6"] == ipaddress.ip_address("2001:db8::1").packed + (51413).to_bytes(
        2, "big"
    )
    assert (body[b"complete"], body[b"incomplete"], body[b"interval"], body[b"min interval"]) == (
        1,
        2,
        1800,
        60,
    )


def test_dictionary_model() -> None:
    body = decode(
        announce_response(
            [PeerAddr("10.0.0.1", 1, PID)],
            complete=0,
            incomplete=1,
            interval=1,
            min_interval=1,
            compact=False,
            no_peer_id=False,
        )
    )
    assert body[b"peers"] == [{b"ip": b"10.0.0.1", b"peer id": PID, b"port": 1}]


def test_scrape() -> None:
    assert parse_scrape(q(info_hash=IH)) == [IH]
    with pytest.raises(TrackerFailure):
        parse_scrape(q(info_hash=b"x"))
    body = decode(scrape_response([(IH, 3, 2, 1)]))
    assert body == {b"files": {IH: {b"complete": 3, b"downloaded": 2, b"incomplete": 1}}}


def test_normalize_ip() -> None:
    assert normalize_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert normalize_ip("2001:DB8::1") == "2001:db8::1"
