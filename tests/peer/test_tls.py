"""Issue 31, item 2: the fleet over TLS, and mutual TLS. A coordinator, an origin and an
edge serve HTTPS with certificates of a CA made in the test; ``shoal pull`` checks them
against ``--ca``. With ``--tls-client-ca`` every server also asks for the client's
certificate: a pull that shows one completes, a client that shows none is refused at the
handshake, and a host that trusts another CA says so."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shoal import tls
from shoal.coordinator_client import CoordinatorClient
from shoal.publishing.publish import PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import free_port, stop_processes, wait_listening, write_model_dir
from tests.conftest import SHOAL
from tests.peer.conftest import CHUNK
from tests.tls_ca import TestCA

FILES = {"weights.bin": 4 * 1024 * 1024 + 11, "config.json": 200}


@dataclass
class TlsFleet:
    tmp: Path
    mutual: bool
    ca: TestCA = field(init=False)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    coordinator: str = ""
    edge: str = ""

    def __post_init__(self) -> None:
        self.ca = TestCA(self.tmp / "ca")

    def server_args(self, name: str) -> list[str]:
        issued = self.ca.issue(name)
        args = ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
        return [*args, *(["--tls-client-ca", str(self.ca.pem)] if self.mutual else [])]

    def start(self) -> None:
        port = free_port()
        self.procs.append(
            subprocess.Popen(
                [
                    *(str(SHOAL), "tracker", "serve", "--host", "127.0.0.1", "--port", str(port)),
                    *("--db", str(self.tmp / "coord.sqlite"), "--publish-token", "pub"),
                    *("--fleet-token", "fleet", "--edge-token", "edge", "--rate-limit", "0"),
                    *self.server_args("coordinator"),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        wait_listening(port, self.procs[-1], "shoal tracker serve")
        self.coordinator = f"https://127.0.0.1:{port}"
        src = write_model_dir(self.tmp / "src", FILES, seed=4)
        self.src = src
        client = self.ca.issue("publisher")
        tls.configure(self.ca.pem, client.cert, client.key)
        try:
            with CoordinatorClient(self.coordinator, "pub") as c:
                self.pub = publish(
                    directory_source(src),
                    PublishOptions(
                        ref=ModelRef.parse("demo:v1"),
                        out=self.tmp / "pub",
                        chunk_size=CHUNK,
                        coordinator=c,
                    ),
                )
        finally:
            tls.configure()  # the other tests' clients: the system's CAs again
        origin = free_port()
        self.procs.append(
            subprocess.Popen(
                [
                    *(str(SHOAL), "seed", str(self.pub.out), "--host", "127.0.0.1"),
                    *("--port", str(origin), "--no-bittorrent", "--token", "edge"),
                    *("--coordinator", self.coordinator, "--ca", str(self.ca.pem)),
                    *self.server_args("origin"),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        wait_listening(origin, self.procs[-1], "shoal seed")
        edge = free_port()
        self.edge = f"https://127.0.0.1:{edge}"
        self.procs.append(
            subprocess.Popen(
                [
                    *(str(SHOAL), "edge", "serve", "--upstream", f"https://127.0.0.1:{origin}"),
                    *("--host", "127.0.0.1", "--port", str(edge), "--public-url", self.edge),
                    *("--cache-dir", str(self.tmp / "edge"), "--token", "edge"),
                    *("--coordinator", self.coordinator, "--ca", str(self.ca.pem)),
                    *self.server_args("edge"),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        wait_listening(edge, self.procs[-1], "shoal edge serve")
        deadline = time.monotonic() + 20
        while len(self.listed()) < 2:
            assert time.monotonic() < deadline, "origin and edge did not register"
            time.sleep(0.2)

    def listed(self) -> list[str]:
        ctx = ssl.create_default_context(cafile=str(self.ca.pem))
        if self.mutual:
            me = self.ca.issue("lister")
            ctx.load_cert_chain(str(me.cert), str(me.key))
        r = httpx.get(
            f"{self.coordinator}/v1/edges", verify=ctx, headers={"Accept": "application/json"}
        )
        return [e["url"] for e in r.json()["edges"]]

    def pull(self, host: str, *args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(str(SHOAL), "pull", "demo:v1", "--models-dir", str(self.tmp / host)),
                *("--coordinator", self.coordinator),
                *(("--token", "fleet") if token else ()),
                *("--host", "127.0.0.1", "--no-lsd", "--json", *args),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )


def running(tmp_path: Path, mutual: bool) -> Iterator[TlsFleet]:
    f = TlsFleet(tmp_path, mutual)
    try:
        f.start()
        yield f
    finally:
        stop_processes(f.procs)


@pytest.fixture(params=[False, True], ids=["tls", "mutual-tls"])
def tls_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TlsFleet]:
    yield from running(tmp_path, request.param)


@pytest.fixture
def mutual_fleet(tmp_path: Path) -> Iterator[TlsFleet]:
    yield from running(tmp_path, True)


def test_the_fleet_over_tls_and_mutual_tls(tls_fleet: TlsFleet) -> None:
    f = tls_fleet
    assert all(u.startswith("https://") for u in f.listed())
    me = f.ca.issue("host1")
    r = f.pull("host1", "--ca", str(f.ca.pem), "--tls-cert", str(me.cert), "--tls-key", str(me.key))
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout.strip().splitlines()[-1])
    assert int(done["bytes_edge"]) > 0  # over HTTPS, from the edge and the origin
    for path in FILES:  # every file, under the digest of its bytes
        want = hashlib.sha256((f.src / path).read_bytes()).hexdigest()
        assert (f.tmp / "host1" / "blobs" / f"sha256-{want}").read_bytes() == (
            f.src / path
        ).read_bytes()


def test_a_host_that_trusts_another_ca_says_so(tls_fleet: TlsFleet) -> None:
    f = tls_fleet
    other = TestCA(f.tmp / "other-ca", "another CA")
    me = other.issue("stranger")
    r = f.pull(
        "stranger", "--ca", str(other.pem), "--tls-cert", str(me.cert), "--tls-key", str(me.key)
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "is not one this host trusts" in r.stderr and "'ca' setting" in r.stderr, r.stderr


def test_with_mutual_tls_a_client_without_a_certificate_is_refused_at_the_handshake(
    mutual_fleet: TlsFleet,
) -> None:
    f = mutual_fleet
    ctx = ssl.create_default_context(cafile=str(f.ca.pem))
    for url in (f.coordinator, f.edge):
        with pytest.raises(httpx.HTTPError) as refused:
            httpx.get(f"{url}/v1/edges", verify=ctx, timeout=10)
        assert "mutual TLS" in (tls.explain(refused.value, url) or "")
    assert f.listed()  # the same request with a certificate is answered
    r = f.pull("anonymous", "--ca", str(f.ca.pem))  # a token alone is not enough
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "tls_cert and tls_key" in r.stderr, r.stderr


def test_with_mutual_tls_a_certificate_stands_in_for_the_token(mutual_fleet: TlsFleet) -> None:
    """The coordinator takes the host its certificate names (verified at the handshake)
    as the host a request speaks for: a pull with a certificate and no token completes."""
    f = mutual_fleet
    me = f.ca.issue("gpu-07")
    ctx = ssl.create_default_context(cafile=str(f.ca.pem))
    ctx.load_cert_chain(str(me.cert), str(me.key))
    who = httpx.get(
        f"{f.coordinator}/v1/whoami", verify=ctx, headers={"Accept": "application/json"}
    ).json()
    assert who["host"] == "host:gpu-07"
    r = f.pull(
        "gpu-07",
        *("--ca", str(f.ca.pem), "--tls-cert", str(me.cert), "--tls-key", str(me.key)),
        token=False,
    )
    assert r.returncode == 0, r.stderr
