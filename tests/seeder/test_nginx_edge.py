"""Debian's nginx with the shipped edge config in front of a real ``shoal seed``."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.testing import free_port
from tests.conftest import aria2_webseed_download
from tests.seeder.test_origin import FILES, Origin, start_seed

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs Debian's nginx")


def nginx_conf(tmp: Path, origin: str, listen: str) -> Path:
    server = (ROOT / "deploy" / "nginx" / "shoal-edge.conf").read_text()
    for key, value in {
        "@ORIGIN@": origin,
        "@LISTEN@": listen,
        "@CACHE_DIR@": str(tmp / "cache"),
        "@MAX_SIZE@": "100m",
    }.items():
        server = server.replace(key, value)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{server}
}}
""")
    return conf


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Origin, str]]:
    for origin in start_seed(tmp_path, v1_only=True):
        port = free_port()
        conf = nginx_conf(tmp_path, origin.url.removeprefix("http://"), f"127.0.0.1:{port}")
        check = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "nginx did not start"
                time.sleep(0.05)
            yield origin, url
        finally:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(timeout=20)


def test_ranges_and_cache_hits_through_nginx(stack: tuple[Origin, str]) -> None:
    origin, url = stack
    entry = next(f for f in origin.pub.manifest.files if f.path.value == "weights/model.gguf")
    data = (origin.src / "weights/model.gguf").read_bytes()
    first = httpx.get(f"{url}/blobs/{entry.sha256}")
    assert first.status_code == 200 and first.content == data
    again = httpx.get(f"{url}/blobs/{entry.sha256}", headers={"Range": "bytes=1000-2999"})
    assert again.status_code == 206 and again.content == data[1000:3000]
    assert again.headers["x-cache-status"] == "HIT"
    assert again.headers["content-range"] == f"bytes 1000-2999/{len(data)}"
    r = httpx.get(f"{url}/webseed/demo-v1/weights/model.gguf", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = httpx.get(f"{url}/v1/manifests/{origin.pub.manifest.digest}")
    assert r.content == origin.pub.manifest.canonical_bytes


def test_aria2c_through_nginx(stack: tuple[Origin, str], tmp_path: Path) -> None:
    if shutil.which("aria2c") is None:
        pytest.skip("needs Debian's aria2")
    from shoal.publishing.publish import PublishOptions, publish
    from shoal.publishing.sources import directory_source
    from shoal.ref import ModelRef

    origin, url = stack
    pub = publish(
        directory_source(origin.src),
        PublishOptions(
            ref=ModelRef.parse("demo:v1"),
            out=tmp_path / "via-nginx",
            chunk_size=64 * 1024,
            v1_only=True,
            web_seeds=[f"{url}/webseed/"],
        ),
    )
    aria2_webseed_download(pub.torrent_path, tmp_path / "dl")
    for rel in FILES:
        assert (tmp_path / "dl" / "demo-v1" / rel).read_bytes() == (origin.src / rel).read_bytes()
