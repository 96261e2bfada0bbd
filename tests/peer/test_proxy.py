"""Edges through an HTTP proxy with credentials: a hand-written forward proxy in front of
the real origin (absolute-form requests, ``Proxy-Authorization``, 407 otherwise)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.peer.conftest import Fleet, finish


class ForwardProxy:
    def __init__(self, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen: list[str] = []
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.handle, "127.0.0.1", 0), self.loop
        ).result(10)
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if headers.get("proxy-authorization") != self.expected:
                self.refused += 1
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            url = urlsplit(target)
            assert url.scheme == "http" and url.hostname and url.port
            self.seen.append(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
            skip = {"proxy-authorization", "proxy-connection", "connection", "host"}
            request = [
                f"{method} {url.path}{'?' + url.query if url.query else ''} HTTP/1.1",
                f"Host: {url.netloc}",
                "Connection: close",
                *(f"{k}: {v}" for k, v in headers.items() if k not in skip),
            ]
            up_writer.write(("\r\n".join(request) + "\r\n\r\n").encode("latin-1"))
            await up_writer.drain()
            writer.write(await up_reader.read())  # the origin closes after its answer
            up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await writer.drain()
            writer.close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy("fleet", "s3cret") as p:
        yield p


def test_edges_through_a_proxy_with_credentials(
    fleet: Fleet, proxy: ForwardProxy, tmp_path: Path
) -> None:
    url = f"http://fleet:s3cret@127.0.0.1:{proxy.port}"
    result = finish(
        fleet.pull(
            "demo:v1", tmp_path / "m", "--edge", fleet.origin_url, "--no-lsd", "--proxy", url
        )
    )
    fleet.check_held(tmp_path / "m", "demo:v1")
    assert int(str(result["bytes_edge"])) == sum(
        f.size for f in fleet.pubs["demo:v1"].manifest.files
    )
    blobs = [t for t in proxy.seen if "/blobs/" in t]
    assert len(blobs) == int(str(result["chunks_edge"]))  # every chunk went through it
    assert proxy.refused == 0


def test_wrong_proxy_credentials_fail_clearly(
    fleet: Fleet, proxy: ForwardProxy, tmp_path: Path
) -> None:
    url = f"http://fleet:wrong@127.0.0.1:{proxy.port}"
    p = fleet.pull(
        "demo:v1", tmp_path / "m", "--edge", fleet.origin_url, "--no-lsd", "--proxy", url
    )
    _, err = p.communicate(timeout=60)
    assert p.returncode == 4 and "Traceback" not in err  # refused
    # issue 27, item 4: said as what it is, not as "cannot resolve ... no upstream has"
    assert "refused its credentials" in err and "407" in err and "cannot resolve" not in err
    assert "fleet:***@" in err and "wrong" not in err  # the password is not shown
    assert proxy.refused >= 1 and not proxy.seen
