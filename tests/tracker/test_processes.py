"""``shoal tracker serve`` as real processes: two replicas on one Redis, and publishing to them."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import msgpack

from shoal import bitfield
from shoal.bencode import decode
from shoal.coordinator_client import CoordinatorClient
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from shoal.testing import free_port, wait_listening, write_model_dir
from shoal.torrent import Torrent
from tests.conftest import SHOAL
from tests.tracker.conftest import flush


def serve(tmp: Path, redis_url: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(SHOAL),
            "tracker",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--redis",
            redis_url,
            "--db",
            str(tmp / "registry.sqlite"),
            "--publish-token",
            "pub",
            "--fleet-token",
            "fleet",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_listening(port, proc, "shoal tracker serve")
    return proc, f"http://127.0.0.1:{port}"


def announce(url: str, info_hash: bytes, port: int, left: int) -> dict[bytes, object]:
    q = (
        f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id=-SH0100-{port:012d}"
        f"&port={port}&left={left}&event=started"
    )
    return decode(httpx.get(f"{url}/announce/fleet?{q}").content)  # a fleet: private


def test_two_replicas_one_redis_and_cli_publish(tmp_path: Path, redis_url: str) -> None:
    flush(redis_url)
    (a, url_a), (b, url_b) = serve(tmp_path / "a", redis_url), serve(tmp_path / "b", redis_url)
    try:
        src = write_model_dir(tmp_path / "src", {"w.bin": 200_000})
        r = subprocess.run(
            [
                str(SHOAL),
                "publish",
                str(src),
                "--name",
                "fleet/m:1",
                "--out",
                str(tmp_path / "out"),
                "--coordinator",
                url_a,
                "--token",
                "pub",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert f"registered with {url_a}" in r.stdout
        torrent = Torrent.load((tmp_path / "out" / "m-1.torrent").read_bytes())
        assert torrent.trackers == (f"{url_a}/announce",)  # the coordinator became the tracker
        with CoordinatorClient(url_b) as cc:  # the other replica knows it
            manifest = cc.resolve(ModelRef.parse("fleet/m:1"))
        assert manifest.info_hash_v1 == torrent.info_hash_v1
        announce(url_a, torrent.info_hash_v1, 4001, 0)
        body = announce(url_b, torrent.info_hash_v1, 4002, 10)
        assert body[b"peers"] == bytes([127, 0, 0, 1]) + (4001).to_bytes(2, "big")
        bad = subprocess.run(
            [
                str(SHOAL),
                "publish",
                str(src),
                "--name",
                "fleet/m:2",
                "--out",
                str(tmp_path / "o2"),
                "--coordinator",
                url_b,
                "--token",
                "nope",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 4 and "may not publish" in bad.stderr
        assert not (tmp_path / "o2").exists()
    finally:
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
        for proc in (a, b):
            assert proc.wait(timeout=20) == 128 + signal.SIGTERM  # graceful, after shutdown
            assert "stopped cleanly" in (proc.stderr.read() if proc.stderr else "")


def test_identities_cannot_be_forged(tmp_path: Path, redis_url: str) -> None:
    """Audit defect 7, against the real ``shoal tracker serve``: X-Forwarded-For from a
    host that is not a configured proxy is ignored (uvicorn believed it from 127.0.0.1),
    and one token speaks for a bounded number of instances (200 of 200 were accepted)."""
    flush(redis_url)
    proc, url = serve(tmp_path, redis_url)
    try:
        src = write_model_dir(tmp_path / "src", {"w.bin": 200_000})
        out = tmp_path / "out"
        published = subprocess.run(
            [str(SHOAL), "publish", str(src), "--name", "m:1", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, published.stderr
        manifest = Manifest.load((out / "manifest.msgpack").read_bytes())
        with CoordinatorClient(url, "pub") as cc:
            cc.publish(manifest, next(out.glob("*.torrent")).read_bytes())
        path = f"{url}/v1/swarms/{manifest.digest}/bitfield"
        n = manifest.num_chunks
        body = msgpack.packb({"bitfield": bitfield.from_indices(range(n), n)})
        headers = {"Authorization": "Bearer fleet", "Content-Type": "application/msgpack"}
        spoofed = {**headers, "X-Forwarded-For": "198.18.0.99"}
        who = msgpack.unpackb(httpx.put(path, content=body, headers=spoofed).content)
        assert who["host"] == "addr:127.0.0.1", who
        statuses = [
            httpx.put(path, content=body, headers={**headers, "X-Shoal-Instance": str(i)})
            for i in range(40)
        ]
        accepted = [r for r in statuses if r.status_code == 200]
        assert len(accepted) == 16, [r.status_code for r in statuses]
        assert all(r.status_code == 409 for r in statuses[16:])
        assert b"instances" in statuses[-1].content
        replicas = msgpack.unpackb(httpx.get(f"{url}/v1/swarms/{manifest.digest}/replicas").content)
        assert replicas["replicas"] == [17] * n  # the 16 instances and the one without
        # an instance already admitted keeps reporting
        again = httpx.put(path, content=body, headers={**headers, "X-Shoal-Instance": "3"})
        assert again.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
