"""The data plane's request-head parser, property-tested: it returns a request or raises
``BadRequest``, nothing else, and its time grows linearly with its input."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seeder.httpserve import MAX_HEADER_BYTES, BadRequest, parse_head

_ALPHABET = st.sampled_from(list("GET/ :\t\r\n-=,bytes0123456789aZ\x00\x7f\xff"))


@settings(max_examples=400, deadline=None)
@given(st.text(_ALPHABET, max_size=600))
def test_any_head_is_a_request_or_bad_request(text: str) -> None:
    head = text.encode("latin-1") + b"\r\n\r\n"
    try:
        request = parse_head(head, "127.0.0.1")
    except BadRequest as exc:
        assert 400 <= exc.status < 500
        return
    assert request.method in ("GET", "HEAD") and request.path.startswith("/")
    for name, value in request.headers.items():
        assert name == name.lower() and "\x00" not in value and "\r" not in value


@pytest.mark.parametrize(
    "filler",
    [" ", " -", "a:", "\t", "X: " + " " * 100 + "\r\n"],
)
def test_parse_time_is_linear(filler: str) -> None:
    """Per byte, a head near the 16 KiB limit costs no more than a short one (within a
    generous factor: timing noise, not a budget)."""

    def per_byte(size: int) -> float:
        body = (filler * (size // len(filler) + 1))[:size]
        head = ("GET / HTTP/1.1\r\nRange: bytes=" + body + "\r\n\r\n").encode("latin-1")
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            with contextlib.suppress(BadRequest):
                parse_head(head, "127.0.0.1")
            best = min(best, time.perf_counter() - started)
        return best / len(head)

    small, large = per_byte(512), per_byte(MAX_HEADER_BYTES - 64)
    assert large < small * 10 + 1e-7, (small, large)


def test_version_and_control_characters() -> None:
    with pytest.raises(BadRequest):
        parse_head(b"GET / HTTP/2.0\r\n\r\n", "c")
    with pytest.raises(BadRequest):
        parse_head(b"GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", "c")
    with pytest.raises(BadRequest):
        parse_head(b"GET / HTTP/1.1\r\nX Y: a\r\n\r\n", "c")
    assert parse_head(b"GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", "c").closes
    assert parse_head(b"GET / HTTP/1.0\r\n\r\n", "c").closes
    assert not parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "c").closes
