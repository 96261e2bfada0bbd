"""``shoal edge serve`` as a real process, registered with a coordinator, before a seed."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import msgpack

from shoal.coordinator_client import CoordinatorClient
from shoal.testing import ServerThread, free_port, wait_listening
from tests.conftest import SHOAL
from tests.seeder.test_origin import start_seed
from tracker.app import create_app
from tracker.settings import TrackerSettings


def test_edge_process_with_coordinator(tmp_path: Path) -> None:
    settings = TrackerSettings(
        db=tmp_path / "t" / "r.sqlite",
        publish_tokens=("pub",),
        fleet_token="fleet",
        rate_limit=0,
        edge_tokens=("edge",),
    )
    with ServerThread(create_app(settings)) as coord:
        for origin in start_seed(tmp_path):
            with CoordinatorClient(coord.url, "pub") as cc:
                cc.publish(origin.pub.manifest, origin.pub.torrent_path.read_bytes())
            port = free_port()
            edge = subprocess.Popen(
                [
                    str(SHOAL),
                    "edge",
                    "serve",
                    "--upstream",
                    origin.url,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--cache-dir",
                    str(tmp_path / "cache"),
                    "--max-size",
                    "64MiB",
                    "--coordinator",
                    coord.url,
                    "--token",
                    "edge",
                    "--label",
                    "rack=r7",
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                wait_listening(port, edge)
                entry = next(
                    f for f in origin.pub.manifest.files if f.path.value == "weights/model.gguf"
                )
                r = httpx.get(f"http://127.0.0.1:{port}/blobs/{entry.sha256}")
                assert r.content == (origin.src / "weights/model.gguf").read_bytes()
                deadline = time.monotonic() + 20
                while True:
                    listed = msgpack.unpackb(httpx.get(f"{coord.url}/v1/edges?rack=r7").content)[
                        "edges"
                    ]
                    kinds = {e["kind"]: e for e in listed}
                    if "edge" in kinds:
                        break
                    assert time.monotonic() < deadline, f"edge did not register: {listed}"
                    time.sleep(0.1)
                assert kinds["edge"]["url"] == f"http://127.0.0.1:{port}/"
                assert kinds["edge"]["labels"] == {"rack": "r7"}
            finally:
                edge.send_signal(signal.SIGTERM)
                assert edge.wait(timeout=20) == 0
            assert "edge stopped" in (edge.stderr.read() if edge.stderr else "")


def test_edge_refuses_bad_settings(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(SHOAL), "edge", "serve", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "--upstream" in r.stderr
    r = subprocess.run(
        [str(SHOAL), "edge", "serve", "--upstream", "http://x/", "--max-size", "lots"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "invalid size" in r.stderr
    r = subprocess.run(
        [str(SHOAL), "edge", "serve", "--upstream", "http://x/", "--upstream-fetches", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "upstream_fetches" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [str(SHOAL), "edge", "serve", "--upstream", "ftp://x/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "upstream" in r.stderr
