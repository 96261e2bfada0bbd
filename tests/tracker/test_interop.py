"""Real clients on our tracker: aria2c and transmission-cli (Debian) download a published
model from a libtorrent seeder, with DHT, LSD and PEX off and our tracker the only one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import libtorrent as lt
import pytest

from shoal.bencode import decode
from shoal.coordinator_client import CoordinatorClient
from shoal.testing import free_port
from tests.conftest import quiet_lt_session
from tests.tracker.conftest import FLEET_TOKEN, PUBLISH_TOKEN, Running, make_published

pytestmark = pytest.mark.skipif(
    not (shutil.which("aria2c") and shutil.which("transmission-cli")),
    reason="needs Debian's aria2 and transmission-cli",
)


def wait_for(
    what: str | Callable[[], str], predicate: Callable[[], bool], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(
        f"timed out waiting for {what()}" if callable(what) else f"timed out waiting for {what}"
    )


def scrape(url: str, info_hash: bytes) -> dict[bytes, int]:
    q = "".join(f"%{b:02x}" for b in info_hash)
    files = decode(httpx.get(f"{url}/scrape?info_hash={q}").content)[b"files"]
    return files.get(info_hash, {})


def lt_seeder(torrent: Path, save: Path) -> tuple[lt.session, lt.torrent_handle]:
    ses = quiet_lt_session(0)  # flags 0: no default plugins, so no ut_pex
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    params.save_path = str(save)
    return ses, ses.add_torrent(params)


def files_match(root: Path, expected: dict[str, str]) -> bool:
    for rel, digest in expected.items():
        p = root / rel
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return False
    return True


def test_aria2c_transmission_and_libtorrent_share_a_model(
    coordinator: Running, tmp_path: Path
) -> None:
    pub = make_published(
        tmp_path, trackers=[f"{coordinator.url}/announce/{FLEET_TOKEN}"], v1_only=True
    )
    ih = pub.manifest.info_hash_v1
    with CoordinatorClient(coordinator.url, PUBLISH_TOKEN) as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    name = pub.manifest.ref.slug
    seed_dir = tmp_path / "seed"
    for f in pub.manifest.files:
        (seed_dir / name / f.path.value).parent.mkdir(parents=True, exist_ok=True)
        os.link(pub.out / "blobs" / f.sha256.filename, seed_dir / name / f.path.value)
    expected = {f.path.value: f.sha256.hex for f in pub.manifest.files}

    ses, handle = lt_seeder(pub.torrent_path, seed_dir)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(
            "the seeder to announce", lambda: scrape(coordinator.url, ih).get(b"complete") == 1
        )
        aria_dir = tmp_path / "aria2"
        procs.append(
            subprocess.Popen(
                [
                    "aria2c",
                    f"--dir={aria_dir}",
                    "--enable-dht=false",
                    "--enable-dht6=false",
                    "--enable-peer-exchange=false",
                    "--bt-enable-lpd=false",
                    "--seed-time=10",
                    "--seed-ratio=0.0",
                    f"--listen-port={free_port()}",
                    "--summary-interval=0",
                    "--console-log-level=warn",
                    "--bt-tracker-interval=1",
                    "--follow-torrent=false",
                    str(pub.torrent_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        tr_conf, tr_dir = tmp_path / "tr-conf", tmp_path / "transmission"
        tr_conf.mkdir()
        tr_dir.mkdir()
        (tr_conf / "settings.json").write_text(
            json.dumps(
                {
                    "dht-enabled": False,
                    "lpd-enabled": False,
                    "pex-enabled": False,
                    "port-forwarding-enabled": False,
                    "utp-enabled": False,
                    "encryption": 1,
                    "rename-partial-files": True,
                }
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    "transmission-cli",
                    "-g",
                    str(tr_conf),
                    "-w",
                    str(tr_dir),
                    "-p",
                    str(free_port()),
                    str(pub.torrent_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

        wait_for("aria2c to finish", lambda: files_match(aria_dir / name, expected))
        wait_for("transmission to finish", lambda: files_match(tr_dir / name, expected))
        want = {b"complete": 3, b"downloaded": 2, b"incomplete": 0}
        seen: list[dict[bytes, int]] = []

        def counted() -> bool:
            seen.append(scrape(coordinator.url, ih))
            return seen[-1] == want

        wait_for(lambda: f"scrape to count 3 seeds, 2 completions (saw {seen[-1:]})", counted)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        ses.remove_torrent(handle)
    assert all(p.poll() is not None for p in procs)
