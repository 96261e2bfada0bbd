"""``shoal seed`` as a real process: Range-exact HTTP, web seed, registry reads, BitTorrent."""

from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import libtorrent as lt
import msgpack
import pytest

from shoal.bencode import decode
from shoal.coordinator_client import CoordinatorClient
from shoal.manifest import Manifest
from shoal.publishing.publish import Published, PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import ServerThread, free_port, start_local_seed, write_model_dir
from tests.conftest import SHOAL, aria2_webseed_download, quiet_lt_session

FILES = {"weights/model.gguf": 1_000_000, "config.json": 321, "empty.txt": 0}


@dataclass
class Origin:
    url: str
    bt_port: int
    pub: Published
    src: Path
    proc: subprocess.Popen[str]


def start_seed(tmp_path: Path, *extra: str, v1_only: bool = False) -> Iterator[Origin]:
    port, bt_port = free_port(), free_port()
    src = write_model_dir(tmp_path / "src", FILES, seed=3)
    pub = publish(
        directory_source(src),
        PublishOptions(
            ref=ModelRef.parse("demo:v1"),
            out=tmp_path / "pub",
            chunk_size=64 * 1024,
            web_seeds=[f"http://127.0.0.1:{port}/webseed/"],
            v1_only=v1_only,
        ),
    )
    proc = start_local_seed(SHOAL, [pub.out], port, bt_port, *extra, stderr=subprocess.PIPE)
    try:
        yield Origin(f"http://127.0.0.1:{port}", bt_port, pub, src, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    yield from start_seed(tmp_path)


def blob_url(o: Origin, rel: str) -> tuple[str, bytes]:
    entry = next(f for f in o.pub.manifest.files if f.path.value == rel)
    return f"{o.url}/blobs/{entry.sha256}", (o.src / rel).read_bytes()


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    dump = [] if "-I" in args else ["-D", "-"]  # -I prints the head itself
    out = subprocess.run(
        ["curl", "-s", *dump, *args], capture_output=True, check=True, timeout=30
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_ranges_with_curl(origin: Origin) -> None:
    url, data = blob_url(origin, "weights/model.gguf")
    size = len(data)
    status, h, body = curl(url)
    assert (status, body, h["accept-ranges"]) == (200, data, "bytes")
    etag = h["etag"]
    assert etag == f'"sha256:{hashlib.sha256(data).hexdigest()}"'
    assert "content-encoding" not in h
    status, h, body = curl("-r", "100-199", url)
    assert (status, h["content-range"], body) == (206, f"bytes 100-199/{size}", data[100:200])
    status, h, body = curl("-r", "999000-", url)
    assert (status, h["content-range"], body) == (
        206,
        f"bytes 999000-{size - 1}/{size}",
        data[999000:],
    )
    status, h, body = curl("-r", "-500", url)
    assert (status, body) == (206, data[-500:])
    status, h, body = curl("-r", f"{size}-", url)
    assert (status, h["content-range"], body) == (416, f"bytes */{size}", b"")
    status, h, body = curl("-r", "0-9", "-H", 'If-Range: "sha256:stale"', url)
    assert (status, body) == (200, data)
    status, h, body = curl("-r", "0-9", "-H", f"If-Range: {etag}", url)
    assert (status, body) == (206, data[:10])
    status, h, body = curl("-I", url)
    assert status == 200 and h["content-length"] == str(size) and body == b""
    status, h, body = curl("-I", "-r", "5-9", url)
    assert status == 206 and h["content-length"] == "5"


def test_keep_alive_serves_many_requests(origin: Origin) -> None:
    url, data = blob_url(origin, "config.json")
    with httpx.Client() as c:
        for i in range(50):
            r = c.get(url, headers={"Range": f"bytes={i}-{i + 9}"})
            assert r.status_code == 206 and r.content == data[i : i + 10]


@pytest.mark.parametrize(
    "path",
    [
        "/blobs/../../etc/passwd",
        "/blobs/..%2F..%2Fetc%2Fpasswd",
        "/blobs/sha256:" + "0" * 64,
        "/blobs/sha256:ZZZ",
        "/blobs/sha256-" + "0" * 64,
        "/webseed/demo-v1/../../../etc/passwd",
        "/webseed/demo-v1/%2e%2e/%2e%2e/etc/passwd",
        "/webseed/demo-v1/..%5c..%5cetc%5cpasswd",
        "/webseed/%2e%2e/etc/passwd",
        "/webseed/demo-v1/%00",
        "/webseed/demo-v1/%ff%fe",
        "/webseed/demo-v1//etc/passwd",
        "/webseed/demo-v1/.pad/999999999",
        "/webseed/demo-v1/.pad/-1",
        "/v1/resolve/..%2F..%2Fx",
        "/v1/manifests/sha256:../../x",
        "/etc/passwd",
    ],
)
def test_traversal_and_bad_paths(origin: Origin, path: str) -> None:
    status, _, body = curl("--path-as-is", origin.url + path)
    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body


def test_raw_protocol_abuse(origin: Origin) -> None:
    port = int(origin.url.rsplit(":", 1)[1])

    def raw(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            return s.recv(200)

    assert raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"POST /blobs/x HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw(b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431"
    )
    assert raw(b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").startswith(
        b"HTTP/1.1 400"
    )


def test_web_seed_layout_and_pads(origin: Origin) -> None:
    data = (origin.src / "weights/model.gguf").read_bytes()
    r = httpx.get(f"{origin.url}/webseed/demo-v1/weights/model.gguf")
    assert r.status_code == 200 and r.content == data
    r = httpx.get(f"{origin.url}/webseed/demo-v1/.pad/1234")
    assert r.status_code == 200 and r.content == b"\0" * 1234
    r = httpx.get(f"{origin.url}/webseed/demo-v1/.pad/1234", headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == b"\0" * 234


def test_registry_read_endpoints(origin: Origin) -> None:
    m = origin.pub.manifest
    answer = msgpack.unpackb(httpx.get(f"{origin.url}/v1/resolve/demo:v1").content)
    assert Manifest.load(answer["manifest"]) == m
    r = httpx.get(f"{origin.url}/v1/manifests/{m.digest}")
    assert Manifest.load(r.content) == m
    r = httpx.get(f"{origin.url}/v1/torrents/{m.info_hash_v1.hex()}")
    assert r.content == origin.pub.torrent_path.read_bytes()
    big = next(f for f in m.files if f.path.value == "weights/model.gguf")
    cmap = msgpack.unpackb(httpx.get(f"{origin.url}/v1/blobs/{big.sha256}/chunks").content)
    assert (cmap["chunk_size"], cmap["size"], cmap["chunks"]) == (
        m.chunk_size,
        big.size,
        big.chunk_hashes,
    )
    assert httpx.get(f"{origin.url}/v1/resolve/other:v1").status_code == 404
    text = httpx.get(f"{origin.url}/metrics").text
    assert "shoal_origin_requests_total" in text


def test_aria2c_downloads_using_only_the_web_seed(tmp_path: Path) -> None:
    if shutil.which("aria2c") is None:
        pytest.skip("needs Debian's aria2")
    for o in start_seed(tmp_path, v1_only=True):  # aria2 1.36 cannot read hybrid torrents
        out = tmp_path / "dl"
        aria2_webseed_download(o.pub.torrent_path, out)
        for rel in FILES:
            assert (out / "demo-v1" / rel).read_bytes() == (o.src / rel).read_bytes()
        served = httpx.get(f"{o.url}/metrics").text
        assert 'route="webseed",status="206"' in served or 'route="webseed",status="200"' in served


def test_libtorrent_leecher_downloads_from_the_seed(origin: Origin, tmp_path: Path) -> None:
    ses = quiet_lt_session()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(origin.pub.torrent_path))
    params.save_path = str(tmp_path / "leech")
    params.url_seeds = []  # BitTorrent only
    params.trackers = []
    h = ses.add_torrent(params)
    h.connect_peer(("127.0.0.1", origin.bt_port))
    deadline = time.monotonic() + 60
    while not h.status().is_seeding:
        assert time.monotonic() < deadline, f"stuck at {h.status().progress:.0%}"
        if not h.status().num_peers:
            h.connect_peer(("127.0.0.1", origin.bt_port))
        time.sleep(0.1)
    assert h.status().total_payload_download >= sum(FILES.values())
    ses.remove_torrent(h)
    for rel in FILES:
        got = tmp_path / "leech" / "demo-v1" / rel
        deadline = time.monotonic() + 10
        while got.stat().st_size != FILES[rel] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got.read_bytes() == (origin.src / rel).read_bytes()


def test_registers_with_the_coordinator(tmp_path: Path) -> None:
    from tracker.app import create_app
    from tracker.settings import TrackerSettings

    settings = TrackerSettings(
        db=tmp_path / "t" / "r.sqlite",
        publish_tokens=("p",),
        fleet_token="fleet",
        rate_limit=0,
        edge_tokens=("edge",),
    )
    with ServerThread(create_app(settings)) as coord:
        for o in start_seed(
            tmp_path, "--coordinator", coord.url, "--token", "edge", "--label", "region=eu"
        ):
            deadline = time.monotonic() + 20
            while True:
                edges = msgpack.unpackb(httpx.get(f"{coord.url}/v1/edges").content)["edges"]
                if edges:
                    break
                assert time.monotonic() < deadline, "origin did not register"
                time.sleep(0.1)
            assert edges == [
                {"url": o.url + "/", "kind": "origin", "labels": {"region": "eu"}, "capacity": 0}
            ]


def test_seed_refuses_what_is_not_published(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(SHOAL), "seed", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "not a published model directory" in r.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.msgpack").write_bytes(b"\x80")
    r = subprocess.run(
        [str(SHOAL), "seed", str(tmp_path / "d")], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "manifest" in r.stderr and "Traceback" not in r.stderr


def test_adversarial_range_header_does_not_stall_the_server(origin: Origin) -> None:
    """Audit defect 1: a Range header of spaces and dashes backtracked with cubic cost on
    the event loop (3.6 KB froze the seed for about 20 s). Near the 16 KiB header limit it
    is now answered in full at once, and /healthz on another connection stays live."""
    url, data = blob_url(origin, "weights/model.gguf")
    evil = "bytes=" + " " * 5000 + "-" + " " * 5000 + "x"
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        answer = client.get(url, headers={"Range": evil})
        health = client.get(origin.url + "/healthz")
    assert time.monotonic() - started < 2
    assert answer.status_code == 200 and answer.content == data
    assert health.status_code == 200


def test_strict_request_heads(origin: Origin) -> None:
    """Audit defect 8: only HTTP/1.0 and 1.1, no control characters in field values, and
    ``Connection: close`` honoured whatever its case."""
    port = int(origin.url.rsplit(":", 1)[1])

    def raw(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            got = b""
            while chunk := s.recv(4096):  # read to EOF: the server must close
                got += chunk
            return got

    assert raw(b"GET /healthz HTTP/1.9\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /healthz HTTP/1.1\r\nX: a\x00b\r\n\r\n").startswith(b"HTTP/1.1 400")
    closed = raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n")
    assert closed.startswith(b"HTTP/1.1 200") and b"Connection: close" in closed


def test_a_fleet_token_cannot_list_an_origin(tmp_path: Path) -> None:
    """Audit defect 2: registering a server takes an edge or publisher token; a refused
    token stops the seed with the coordinator's reason, once."""
    from tracker.app import create_app
    from tracker.settings import TrackerSettings

    settings = TrackerSettings(
        db=tmp_path / "t" / "r.sqlite", publish_tokens=("p",), fleet_token="fleet", rate_limit=0
    )
    with ServerThread(create_app(settings)) as coord:
        for o in start_seed(tmp_path, "--coordinator", coord.url, "--token", "fleet"):
            _, err = o.proc.communicate(timeout=30)
            assert o.proc.returncode == 4, err  # refused (shoal/errors.py)
            assert "refused to list" in err and "edge token" in err, err
            assert "Traceback" not in err
            assert msgpack.unpackb(httpx.get(f"{coord.url}/v1/edges").content)["edges"] == []


def test_a_seed_announces_to_a_private_coordinator(tmp_path: Path) -> None:
    """Audit defect 8: shoal's own components announced to the plain /announce, which a
    ``--private`` coordinator refuses; they now announce with their token as passkey."""
    from tracker.app import create_app
    from tracker.settings import TrackerSettings

    settings = TrackerSettings(
        db=tmp_path / "t" / "r.sqlite",
        publish_tokens=("p",),
        fleet_token="fleet",
        edge_tokens=("edge",),
        rate_limit=0,
        private=True,
    )
    src = write_model_dir(tmp_path / "src", FILES, seed=3)
    pub = publish(
        directory_source(src),
        PublishOptions(ref=ModelRef.parse("demo:v1"), out=tmp_path / "pub", chunk_size=65536),
    )
    with ServerThread(create_app(settings)) as coord:
        with CoordinatorClient(coord.url, "p") as cc:
            cc.publish(pub.manifest, pub.torrent_path.read_bytes())
        proc = start_local_seed(
            SHOAL,
            [pub.out],
            free_port(),
            free_port(),
            "--coordinator",
            coord.url,
            "--token",
            "edge",
        )
        try:
            ih = quote_from_bytes(pub.manifest.info_hash_v1, safe="")
            deadline = time.monotonic() + 30
            while True:
                raw = httpx.get(f"{coord.url}/scrape/fleet?info_hash={ih}").content
                files = decode(raw).get(b"files", {})
                if files.get(pub.manifest.info_hash_v1, {}).get(b"complete"):
                    break
                assert time.monotonic() < deadline, f"the seed never announced: {raw!r}"
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
