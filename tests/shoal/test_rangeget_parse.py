"""The lean client's answer-head parser, property-tested: a head or ``ValueError``,
nothing else, whatever a server sends (audit, issue 26)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.rangeget import HttpFailure, RangeClient, _parse

_ALPHABET = st.sampled_from(list("HTTP/1.0 206:\t\r\nContent-Length2³²¹-abc\x00\xff"))


@settings(max_examples=400, deadline=None)
@given(st.text(_ALPHABET, max_size=300))
def test_any_head_parses_or_is_a_value_error(text: str) -> None:
    try:
        version, status, headers = _parse(text.encode("latin-1"))
    except ValueError:
        return
    assert version in ("HTTP/1.0", "HTTP/1.1") and 0 <= status <= 999
    assert all(k == k.lower() for k in headers)


@pytest.mark.parametrize("length", ["\xb2", "1\xb3", "-1", "", "9" * 30])
def test_a_bad_content_length_is_a_clean_failure(length: str) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: such an answer failed inside the
    protocol callback instead of as an HttpFailure."""

    problems: list[object] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        server = await asyncio.start_server(lambda r, w: _answer(r, w, length), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RangeClient(connect_timeout=2, read_timeout=2)
        try:
            with pytest.raises(HttpFailure):
                await client.get(f"http://127.0.0.1:{port}/x", {}, 1000)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    assert problems == []  # not a "Fatal error: protocol.buffer_updated() call failed"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: str) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nabc".encode("latin-1"))
    await writer.drain()
    writer.close()
