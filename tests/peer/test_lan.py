"""The LAN messages of agents without a coordinator (peer/lan.py): what is read off the
wire, strictly and within bounds, and who fetches from upstream."""

from __future__ import annotations

import pytest

from peer.lan import (
    DEFAULT_GROUP,
    MAX_DATAGRAM,
    Heard,
    Kind,
    Message,
    Step,
    decode,
    next_step,
    parse_group,
)
from shoal.digest import Digest
from shoal.errors import BadInput

M = Digest.of(b"an upstream manifest")
ME, LOWER, HIGHER = "5" * 16, "1" * 16, "9" * 16


@pytest.mark.parametrize(
    "msg",
    [
        Message(Kind.WANT, M, ME),
        Message(Kind.FETCHING, M, ME),
        Message(Kind.HAVE, M, ME, bytes(range(20)), 6881),
    ],
)
def test_each_message_reads_back_as_written(msg: Message) -> None:
    assert decode(msg.encode()) == msg
    assert len(msg.encode()) < MAX_DATAGRAM


def have(**change: str) -> bytes:
    headers = {"Manifest": str(M), "Id": ME, "Infohash": "ab" * 20, "Port": "6881"}
    headers.update(change)
    body = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v)
    return f"SHOAL-HAVE 1\r\n{body}\r\n".encode()


@pytest.mark.parametrize(
    "data",
    [
        b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n\r\n",  # LSD
        have(Manifest="sha256:xyz"),
        have(Manifest=""),
        have(Id="not-hex-at-all!!"),
        have(Id="5" * 15),
        have(Infohash="ab" * 19),
        have(Port="0"),
        have(Port="65536"),
        have(Port="-1"),
        have(Port=""),
        have()[:-2],  # not ended
        have().replace(b"Port: 6881\r\n", b"Port: 6881\r\nPort: 6882\r\n"),  # twice
        have().replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * 80 + b"\r\n\r\n"),  # too long
        have().replace(b"Port", b"Po rt"),
        b"SHOAL-WANT 2\r\nManifest: " + str(M).encode() + b"\r\nId: " + ME.encode() + b"\r\n\r\n",
        have() + b"x" * MAX_DATAGRAM,
        b"",
    ],
)
def test_anything_else_is_not_a_message(data: bytes) -> None:
    assert decode(data) is None


def test_a_long_run_of_headers_is_read_in_linear_time() -> None:
    data = b"SHOAL-WANT 1\r\n" + b"A: b\r\n" * 80 + b"\r\n"  # within bounds, then refused
    assert decode(data[:MAX_DATAGRAM]) is None


def heard(now: float = 0.0, **kw: dict[str, float]) -> Heard:
    h = Heard(started=now)
    h.fetching.update(kw.get("fetching", {}))
    h.wants.update(kw.get("wants", {}))
    return h


def test_a_host_that_heard_a_have_pulls_from_the_lan() -> None:
    h = heard(fetching={LOWER: 0.0})
    h.haves[("198.18.0.2", 6881)] = b"\x01" * 20
    assert next_step(h, ME, 0.1, listen=1.5, patience=10) is Step.LAN


def test_a_host_listens_before_it_fetches() -> None:
    assert next_step(heard(), ME, 1.0, listen=1.5, patience=10) is Step.WAIT
    assert next_step(heard(), ME, 1.6, listen=1.5, patience=10) is Step.FETCH


def test_the_lower_id_fetches_and_the_others_wait_for_it() -> None:
    assert next_step(heard(wants={LOWER: 1.0}), ME, 2.0, 1.5, 10) is Step.WAIT
    assert next_step(heard(wants={HIGHER: 1.0}), ME, 2.0, 1.5, 10) is Step.FETCH


def test_a_host_that_fetches_is_waited_for_until_it_falls_silent() -> None:
    assert next_step(heard(fetching={HIGHER: 5.0}), ME, 14.0, 1.5, 10) is Step.WAIT
    assert next_step(heard(fetching={HIGHER: 5.0}), ME, 15.5, 1.5, 10) is Step.FETCH
    # a lower id that wanted it and then went silent does not hold this host back
    assert next_step(heard(wants={LOWER: 1.0}), ME, 11.5, 1.5, 10) is Step.FETCH


@pytest.mark.parametrize(
    "text", ["10.0.0.1:6772", "239.1.1.1", "239.1.1.1:x", "239.1.1.1:0", "host:1", "off:1"]
)
def test_a_group_that_is_not_ipv4_multicast_is_refused(text: str) -> None:
    with pytest.raises(BadInput):
        parse_group(text)


def test_the_default_group_is_valid() -> None:
    assert parse_group(DEFAULT_GROUP) == ("239.192.152.143", 6772)
