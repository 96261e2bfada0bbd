"""Debian's ``docker-registry`` (distribution 2.8.2) as a real upstream registry: started
on a free loopback port with its own storage, models pushed through the registry API as
ollama pushes them, and its access log read back (what it sent, per blob)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from scenarios.netns import call_in, exec_argv, wait_port
from shoal.digest import Digest
from shoal.testing import free_port, stop_processes, wait_listening

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
_ACCESS = re.compile(r'"(GET|HEAD) (\S+) HTTP/1\.1" (\d{3}) (\d+)')


@dataclass
class UpstreamRegistry:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    user: tuple[str, str] | None = None  # Basic auth (htpasswd, bcrypt) when given
    host: str = "127.0.0.1"
    netns: str | None = None  # a network namespace to run in (scenarios/netns.py)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "access.log"

    def start(self) -> None:
        if shutil.which("docker-registry") is None:
            pytest.fail("docker-registry is not installed: run scripts/test.sh, which installs it")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        auth = ""
        if self.user is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt  # glibc's bcrypt: the only hash docker-registry's htpasswd takes

                hashed = crypt.crypt(self.user[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
            (self.root / "htpasswd").write_text(f"{self.user[0]}:{hashed}\n")
            auth = f"auth: {{htpasswd: {{realm: shoal-test, path: {self.root / 'htpasswd'}}}}}\n"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, formatter: text, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}}}\n"
            f"http: {{addr: '{self.host}:{self.port}'}}\n" + auth
        )
        out = self.log.open("ab")
        argv = ["docker-registry", "serve", str(config)]
        if self.netns is None:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out)
            wait_listening(self.port, self.proc, "docker-registry")
        else:
            self.proc = subprocess.Popen(exec_argv(self.netns, argv), stdout=out, stderr=out)
            wait_port(self.netns, self.host, self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc])
            self.proc = None

    def push(self, name: str, tag: str, layers: list[tuple[str, bytes]], config: bytes) -> bytes:
        """Push an ollama-format model; returns the manifest bytes the registry holds."""
        if self.netns is not None:
            ns, self.netns = self.netns, None
            try:
                return call_in(ns, lambda: self.push(name, tag, layers, config))
            finally:
                self.netns = ns
        with httpx.Client(base_url=self.url, timeout=60, auth=self.user) as c:

            def put(data: bytes) -> str:
                digest = str(Digest.of(data))
                r = c.post(f"/v2/{name}/blobs/uploads/")
                assert r.status_code == 202, r.text
                location = r.headers["location"]  # holds a query of its own: add to it
                sep = "&" if "?" in location else "?"
                r = c.put(f"{location}{sep}digest={digest}", content=data)
                assert r.status_code == 201, r.text
                return digest

            doc = {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": CONFIG_TYPE, "digest": put(config), "size": len(config)},
                "layers": [
                    {"mediaType": m, "digest": put(data), "size": len(data)} for m, data in layers
                ],
            }
            raw = json.dumps(doc, indent=3).encode()  # as ollama writes it: not compact
            r = c.put(
                f"/v2/{name}/manifests/{tag}",
                content=raw,
                headers={"Content-Type": DOCKER_MANIFEST},
            )
            assert r.status_code == 201, r.text
            got = c.get(f"/v2/{name}/manifests/{tag}", headers={"Accept": DOCKER_MANIFEST})
            assert got.content == raw
            return raw

    def sent(self, path_part: str, since: int = 0) -> tuple[int, int]:
        """GET requests whose path holds ``path_part``, and the body bytes they were sent
        (logged from byte ``since`` of the log on). The registry logs a request when it
        has written its body, into socket buffers included; a killed one never."""
        text = self.log.read_bytes()[since:].decode(errors="replace")
        count = total = 0
        for method, path, _status, size in _ACCESS.findall(text):
            if method == "GET" and path_part in path:
                count += 1
                total += int(size)
        return count, total


class LyingRegistry:
    """A hand-written upstream that lies, as an ASGI app (for ``ServerThread``):

    - ``library/badblob:1`` names a blob by the digest of bytes it never sends;
    - ``library/moving:1`` is a different manifest at every GET (the tag moves);
    - ``library/baddigest:1`` says a ``Docker-Content-Digest`` its bytes do not have.
    """

    def __init__(self) -> None:
        self.real = blob(1 << 20, b"r")
        self.fake = blob(1 << 20, b"f")
        self.gets = 0

    def manifest(self, layer: bytes, extra: str = "") -> bytes:
        doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": str(Digest.of(b"{}")), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.ollama.image.model",
                    "digest": str(Digest.of(layer)),
                    "size": len(layer),
                    **({"annotations": {"n": extra}} if extra else {}),
                }
            ],
        }
        return json.dumps(doc).encode()

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        path = str(scope["path"])
        headers: list[tuple[bytes, bytes]] = []
        status, body = 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}'
        if path.endswith("/manifests/1"):
            self.gets += 1
            status = 200
            if "/badblob/" in path:
                body = self.manifest(self.real)
            elif "/moving/" in path:
                body = self.manifest(self.real, extra=str(self.gets))
            elif "/baddigest/" in path:
                body = self.manifest(self.real)
                headers.append((b"docker-content-digest", str(Digest.of(b"other")).encode()))
            else:
                status, body = 404, body
        elif "/blobs/" in path:
            status = 200
            digest = path.rsplit("/", 1)[1]
            body = b"{}" if digest == str(Digest.of(b"{}")) else self.fake
            if "/moving/" in path or "/baddigest/" in path:
                body = b"{}" if digest == str(Digest.of(b"{}")) else self.real
        headers += [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


def blob(size: int, fill: bytes) -> bytes:
    return (fill * size)[:size]


class SlowProxy:
    """A TCP relay at ``rate`` bytes/s from the upstream to the client, in a thread: a
    fetch over loopback lasts long enough to cut its upstream in the middle."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port, self.rate = target_port, rate
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:  # a small receive buffer: what the upstream has sent is what was relayed
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
            ur, uw = await asyncio.open_connection(sock=sock)
        except OSError:
            w.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
            try:
                with contextlib.suppress(OSError):  # a side closed: so does the relay
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                        if slow:
                            await asyncio.sleep(len(data) / self.rate)
            finally:
                dst.close()

        await asyncio.gather(pipe(r, uw, False), pipe(ur, w, True))


class TokenRegistry:
    """A hand-written upstream that wants a Bearer token, as registry.ollama.ai and Docker
    Hub do: a 401 names the token service (``realm``), which gives a token for Basic
    credentials ``user``; with the token it serves ``library/tok:1`` and ``:2`` honestly."""

    def __init__(self, user: tuple[str, str]) -> None:
        self.user, self.url, self.token = user, "", "t0k3n-for-puller"
        self.layer = blob(300_000, b"t")
        self.raw = LyingRegistry().manifest(self.layer)
        self.token_asks: list[str] = []  # the scope asked each time

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        path = str(scope["path"])
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}  # type: ignore[attr-defined]
        status, body, extra = 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', []
        if path == "/token":
            query = parse_qs(bytes(scope["query_string"]).decode())  # type: ignore[arg-type]
            self.token_asks.append(query.get("scope", [""])[0])
            basic = "Basic " + base64.b64encode(":".join(self.user).encode()).decode()
            if headers.get("authorization") == basic:
                status, body = 200, json.dumps({"token": self.token}).encode()
        elif headers.get("authorization") != f"Bearer {self.token}":
            challenge = (
                f'Bearer realm="{self.url}/token",service="shoal-test",'
                'scope="repository:library/tok:pull"'
            )
            extra = [(b"www-authenticate", challenge.encode())]
        elif path in ("/v2/library/tok/manifests/1", "/v2/library/tok/manifests/2"):
            status, body = 200, self.raw
        elif path.startswith("/v2/library/tok/blobs/"):
            digest = path.rsplit("/", 1)[1]
            status = 200
            body = b"{}" if digest == str(Digest.of(b"{}")) else self.layer
        else:
            status, body = 404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'
        headers_out = [(b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers_out})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]
