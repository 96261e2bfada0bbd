"""``shoal pull`` from a third-party seed, found through shoal's tracker, as its only
source (issue 27, item 1): qBittorrent (libtorrent 2.0.8), transmission 3.00 and aria2
1.36, each seeding a ``--v1-only`` model registered on the coordinator.

A pull's torrent started with every piece at priority 0, so libtorrent counted itself
finished before the scheduler spoke; qBittorrent dropped the connection and was never
dialled again (no progress in 60 s). The torrent now stays paused until its first
priorities are set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import pytest

from shoal.bencode import decode
from shoal.coordinator_client import CoordinatorClient
from shoal.publishing.publish import Published, PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import free_port, stop_processes, write_model_dir
from tests.peer.conftest import Fleet, finish

FILES = {"weights/model.gguf": 3_000_000, "config.json": 321}


def _qbittorrent(work: Path, torrent: Path, save: Path) -> list[str]:
    config = work / "qbt" / "qBittorrent" / "config"
    config.mkdir(parents=True)
    port = free_port()
    (config / "qBittorrent.conf").write_text(
        "[LegalNotice]\nAccepted=true\n\n"
        "[BitTorrent]\nSession\\DHTEnabled=false\nSession\\LSDEnabled=false\n"
        f"Session\\PeXEnabled=false\nSession\\Port={port}\n\n"
        f"[Preferences]\nWebUI\\Port={free_port()}\nConnection\\PortRangeMin={port}\n"
    )
    return [
        *("qbittorrent-nox", f"--profile={work / 'qbt'}", f"--torrenting-port={port}"),
        *(f"--webui-port={free_port()}", f"--save-path={save}", "--skip-hash-check"),
        str(torrent),
    ]


def _transmission(work: Path, torrent: Path, save: Path) -> list[str]:
    conf = work / "tr-conf"
    conf.mkdir()
    settings = {"dht-enabled": False, "lpd-enabled": False, "pex-enabled": False}
    (conf / "settings.json").write_text(json.dumps({**settings, "utp-enabled": False}))
    return [
        "transmission-cli",
        "-g",
        str(conf),
        "-w",
        str(save),
        "-p",
        str(free_port()),
        str(torrent),
    ]


def _aria2c(work: Path, torrent: Path, save: Path) -> list[str]:
    return [
        *("aria2c", f"--dir={save}", "--check-integrity=true", "--seed-ratio=0.0"),
        *("--seed-time=600", "--enable-dht=false", "--enable-dht6=false"),
        *("--enable-peer-exchange=false", "--bt-enable-lpd=false", "--bt-tracker-interval=1"),
        *(f"--listen-port={free_port()}", "--summary-interval=0", "--console-log-level=warn"),
        str(torrent),
    ]


SEEDERS = {"qbittorrent-nox": _qbittorrent, "transmission-cli": _transmission, "aria2c": _aria2c}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        f.start_coordinator()
        yield f
    finally:
        stop_processes([p for p in (f.coordinator,) if p is not None])


def _published(fleet: Fleet) -> Published:
    src = write_model_dir(fleet.tmp / "src", FILES, seed=8)
    pub = publish(
        directory_source(src),
        PublishOptions(
            ref=ModelRef.parse("third:v1"),
            out=fleet.tmp / "pub",
            chunk_size=64 * 1024,
            v1_only=True,
            # a private fleet: other clients announce with a passkey (the fleet token)
            trackers=[f"{fleet.coord_url}/announce/fleet"],
        ),
    )
    with CoordinatorClient(fleet.coord_url, "pub") as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    fleet.pubs["third:v1"], fleet.srcs["third:v1"] = pub, src
    return pub


def _complete(fleet: Fleet, info_hash: bytes) -> int:
    ih = quote_from_bytes(info_hash, safe="")
    raw = httpx.get(f"{fleet.coord_url}/scrape/fleet?info_hash={ih}").content
    return int(decode(raw).get(b"files", {}).get(info_hash, {}).get(b"complete", 0))


@pytest.mark.parametrize("client", sorted(SEEDERS))
def test_a_third_party_client_as_the_only_seed(fleet: Fleet, tmp_path: Path, client: str) -> None:
    if shutil.which(client) is None:
        pytest.fail(f"{client} is not installed: run scripts/test.sh, which installs it")
    pub = _published(fleet)
    save = tmp_path / "seed"
    for f in pub.manifest.files:  # the files where a BitTorrent client keeps them
        target = save / pub.manifest.ref.slug / f.path.value
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(pub.out / "blobs" / f.sha256.filename, target)
    # BEP 47 pad files: aria2 1.36 and transmission 3.00 do not know them, and a seed
    # that lacks one is not complete to them
    for entry in decode(pub.torrent_path.read_bytes())[b"info"][b"files"]:
        if entry.get(b"attr") == b"p":
            pad = save / pub.manifest.ref.slug / "/".join(p.decode() for p in entry[b"path"])
            pad.parent.mkdir(parents=True, exist_ok=True)
            pad.write_bytes(bytes(entry[b"length"]))
    seeder = subprocess.Popen(
        SEEDERS[client](tmp_path, pub.torrent_path, save),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while _complete(fleet, pub.manifest.info_hash_v1) < 1:
            assert time.monotonic() < deadline, f"{client} never announced as a seed"
            assert seeder.poll() is None, f"{client} exited"
            time.sleep(0.2)
        result = finish(fleet.coordinated_pull("third:v1", tmp_path / "m", "--no-lsd"), 90)
    finally:
        stop_processes([seeder])
    fleet.check_held(tmp_path / "m", "third:v1")
    assert int(str(result["bytes_peer"])) >= pub.manifest.total_size
    assert result["bytes_edge"] == 0
