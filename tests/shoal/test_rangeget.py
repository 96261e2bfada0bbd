"""The lean range client against a hand-written server on a real socket that answers each
request as a test says: keep-alive, stale connections, cut and oversized answers, silence,
malformed heads, credentials, cancellation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shoal.rangeget import AnswerTooLarge, HttpFailure, HttpTimeout, RangeClient

Script = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # -> keep the connection
BODY = bytes(range(256)) * 1024  # 256 KiB


class Server:
    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/blobs/x"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                if not await self.script(head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def partial(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(body)}\r\n"
        f"Content-Range: bytes 0-{len(body) - 1}/{len(body)}\r\n{extra}\r\n"
    ).encode() + body


def sends(data: bytes, keep: bool = True) -> Script:
    """A script that answers every request with ``data``."""

    async def script(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(data)
        await w.drain()
        return keep

    return script


ok = sends(partial(BODY))


@contextlib.asynccontextmanager
async def client(
    read_timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> AsyncIterator[RangeClient]:
    c = RangeClient(connect_timeout=2.0, read_timeout=read_timeout, ssl_context=tls)
    try:
        yield c
    finally:
        await c.close()


@pytest.mark.anyio
async def test_answers_come_whole_over_one_kept_alive_connection() -> None:
    async with Server(ok) as srv, client() as c:
        for _ in range(3):
            a = await c.get(srv.url, {"Range": "bytes=0-262143"}, len(BODY))
            assert a.status == 206 and a.body == BODY
            assert a.headers["content-range"] == f"bytes 0-{len(BODY) - 1}/{len(BODY)}"
        assert srv.connections == 1 and c.connections_made == 1
        assert b"GET /blobs/x HTTP/1.1\r\n" in srv.requests[0]
        assert b"Range: bytes=0-262143\r\n" in srv.requests[0]
        assert b"Accept-Encoding: identity\r\n" in srv.requests[0]


@pytest.mark.anyio
async def test_body_bytes_sent_with_the_head_and_in_small_pieces() -> None:
    async def dribble(head: bytes, w: asyncio.StreamWriter) -> bool:
        data = partial(BODY[:5000])
        for i in range(0, len(data), 700):  # head and body cut anywhere
            w.write(data[i : i + 700])
            await w.drain()
            await asyncio.sleep(0.001)
        return True

    async with Server(dribble) as srv, client() as c:
        a = await c.get(srv.url, {}, 5000)
        assert a.body == BODY[:5000]


@pytest.mark.anyio
async def test_a_connection_the_server_closed_while_idle_is_replaced_once() -> None:
    async def once(head: bytes, w: asyncio.StreamWriter) -> bool:
        await ok(head, w)
        return False  # close after each answer, without saying so

    async with Server(once) as srv, client() as c:
        assert (await c.get(srv.url, {}, len(BODY))).body == BODY
        await asyncio.sleep(0.1)  # the close reaches the client
        assert (await c.get(srv.url, {}, len(BODY))).body == BODY
        assert c.connections_made == 2


@pytest.mark.anyio
async def test_connection_close_is_honoured() -> None:
    async def closing(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(partial(b"abc", "Connection: close\r\n"))
        await w.drain()
        await asyncio.sleep(0.2)  # the client must not wait for it
        return False

    async with Server(closing) as srv, client() as c:
        assert (await c.get(srv.url, {}, 3)).body == b"abc"
        assert (await c.get(srv.url, {}, 3)).body == b"abc"
        assert c.connections_made == 2


@pytest.mark.anyio
async def test_bytes_past_the_answer_retire_the_connection() -> None:
    async with Server(sends(partial(b"abc") + b"garbage")) as srv, client() as c:
        for _ in range(2):
            assert (await c.get(srv.url, {}, 3)).body == b"abc"
        assert c.connections_made == 2  # the first connection was not used again


@pytest.mark.anyio
async def test_an_answer_cut_mid_body_fails() -> None:
    async with Server(sends(partial(BODY)[: len(BODY) // 2], False)) as srv, client() as c:
        with pytest.raises(HttpFailure, match="closed before the answer was complete"):
            await c.get(srv.url, {}, len(BODY))


@pytest.mark.anyio
async def test_a_body_larger_than_asked_for_is_refused_unread() -> None:
    async with Server(ok) as srv, client() as c:
        with pytest.raises(AnswerTooLarge):
            await c.get(srv.url, {}, len(BODY) - 1)


@pytest.mark.anyio
async def test_a_body_until_close_larger_than_asked_for_is_refused() -> None:
    async with Server(sends(b"HTTP/1.1 200 OK\r\n\r\n" + BODY, False)) as srv, client() as c:
        with pytest.raises(AnswerTooLarge):
            await c.get(srv.url, {}, 1000)


@pytest.mark.anyio
async def test_a_body_until_close_within_the_limit_is_read() -> None:
    async with Server(sends(b"HTTP/1.0 200 OK\r\n\r\n" + BODY[:3000], False)) as srv, client() as c:
        assert (await c.get(srv.url, {}, 5000)).body == BODY[:3000]


@pytest.mark.anyio
async def test_a_chunked_success_is_refused() -> None:
    async with (
        Server(
            sends(
                b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                True,
            )
        ) as srv,
        client() as c,
    ):
        with pytest.raises(HttpFailure, match="chunked"):
            await c.get(srv.url, {}, 3)


@pytest.mark.anyio
async def test_an_error_status_comes_back_without_its_page_and_keeps_the_connection() -> None:
    async with (
        Server(
            sends(
                b"HTTP/1.1 504 Gateway Timeout\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nmiss",
                True,
            )
        ) as srv,
        client() as c,
    ):
        for _ in range(2):
            a = await c.get(srv.url, {}, 10)
            assert a.status == 504 and a.body == b"" and a.headers["retry-after"] == "7"
        assert c.connections_made == 1


@pytest.mark.anyio
async def test_an_informational_head_is_skipped() -> None:
    async with (
        Server(sends(b"HTTP/1.1 100 Continue\r\n\r\n" + partial(b"xyz"), True)) as srv,
        client() as c,
    ):
        assert (await c.get(srv.url, {}, 3)).body == b"xyz"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 206 Partial\r\n\r\n",
        b"HTTP/1.1 20x Partial\r\n\r\n",
        b"HTTP/1.1 206 Partial\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 206 Partial\r\n folded: line\r\n\r\n",
        b"HTTP/1.1 206 Partial\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 206 Partial\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        b"HTTP/1.1 206 Partial\r\nX: " + b"a" * 20000,  # never ends
    ],
)
@pytest.mark.anyio
async def test_a_malformed_head_fails_clearly(answer: bytes) -> None:
    async def bad(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(answer)
        await w.drain()
        await asyncio.sleep(0.5)
        return False

    async with Server(bad) as srv, client() as c:
        with pytest.raises(HttpFailure, match=r"malformed|too large"):
            await c.get(srv.url, {}, 10)


@pytest.mark.anyio
async def test_silence_times_out_but_a_slow_steady_answer_does_not() -> None:
    async def silent(head: bytes, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(2)
        return False

    async def slow(head: bytes, w: asyncio.StreamWriter) -> bool:
        data = partial(BODY[:40])
        for i in range(len(data)):  # 0.8 s in all, never 0.3 s quiet
            w.write(data[i : i + 1])
            await w.drain()
            await asyncio.sleep(0.008)
        return True

    async with Server(silent) as srv, client(read_timeout=0.3) as c:
        with pytest.raises(HttpTimeout):
            await c.get(srv.url, {}, 10)
    async with Server(slow) as srv, client(read_timeout=0.3) as c:
        assert (await c.get(srv.url, {}, 40)).body == BODY[:40]


@pytest.mark.anyio
async def test_a_refused_connection_is_a_failure_not_a_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client() as c:
        with pytest.raises(HttpFailure, match="cannot connect") as err:
            await c.get(f"http://127.0.0.1:{port}/blobs/x", {}, 10)
        assert not isinstance(err.value, HttpTimeout)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, as an operator would make one)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=shoal-test", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.anyio
async def test_https_answers_come_whole_and_an_untrusted_server_is_refused(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with Server(ok, tls=served) as srv:
        async with client(tls=trusting) as c:
            for _ in range(2):
                a = await c.get(srv.url, {"Range": "bytes=0-262143"}, len(BODY))
                assert a.status == 206 and a.body == BODY
            assert c.connections_made == 1  # kept alive over TLS too
        async with client(tls=ssl.create_default_context()) as c:  # the usual CAs only
            with pytest.raises(HttpFailure, match=r"cannot connect to 127\.0\.0\.1") as err:
                await c.get(srv.url, {}, len(BODY))
            assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
        assert len(srv.requests) == 2  # nothing was asked of the server it did not trust


@pytest.mark.anyio
async def test_credentials_in_the_url_go_as_basic_auth() -> None:
    async with Server(ok) as srv, client() as c:
        url = srv.url.replace("http://", "http://us%40er:p%3Ass@")
        await c.get(url, {}, len(BODY))
        token = base64.b64encode(b"us@er:p:ss").decode()
        assert f"Authorization: Basic {token}\r\n".encode() in srv.requests[0]
        assert b"Host: 127.0.0.1:" in srv.requests[0] and b"@" not in srv.requests[0]


@pytest.mark.anyio
async def test_a_cancelled_request_never_leaves_its_connection_for_the_next() -> None:
    started = asyncio.Event()

    async def stalling(head: bytes, w: asyncio.StreamWriter) -> bool:
        if len(started_log) == 0:
            started_log.append(1)
            w.write(partial(BODY)[:1000])
            await w.drain()
            started.set()
            await asyncio.sleep(1)
            return False
        return await ok(head, w)

    started_log: list[int] = []
    async with Server(stalling) as srv, client() as c:
        task = asyncio.ensure_future(c.get(srv.url, {}, len(BODY)))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await c.get(srv.url, {}, len(BODY))).body == BODY
        assert c.connections_made == 2


@pytest.mark.parametrize(
    "url",
    [
        *("ftp://h/x", "http:///x", "http://h/a b", "http://h:0x/"),
        *("http://h/a\x7fb", "http://h/\u00e9", "http://h/a\u2003b", "http://h\u00e9/x"),
    ],
)
@pytest.mark.anyio
async def test_invalid_urls_are_refused(url: str) -> None:
    async with client() as c:
        for _ in range(2):  # parsed URLs are remembered; refusals are not
            with pytest.raises(HttpFailure, match="invalid URL"):
                await c.get(url, {}, 10)
