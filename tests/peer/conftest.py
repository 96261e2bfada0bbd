"""Real processes for the pull tests: a coordinator (``shoal tracker serve``), an origin
(``shoal seed``) serving published models, and ``shoal pull`` runs against them."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from peer.store import Store
from shoal.coordinator_client import CoordinatorClient
from shoal.publishing.publish import Published, PublishOptions, publish
from shoal.publishing.sources import Source, directory_source
from shoal.ref import ModelRef
from shoal.testing import free_port, stop_processes, wait_listening, write_model_dir
from tests.conftest import SHOAL
from tests.seeder.test_origin import Origin, start_seed

CHUNK = 64 * 1024
MODEL = {"weights/model.gguf": 6 * 1024 * 1024 + 12345, "config.json": 321, "empty.txt": 0}


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    """A real ``shoal seed`` process serving a freshly published model."""
    yield from start_seed(tmp_path)


@dataclass
class Fleet:
    """A coordinator and an origin as real processes, restartable on the same ports."""

    tmp: Path
    coordinated: bool = True  # the origin registers with the coordinator
    coord_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    bt_port: int = field(default_factory=free_port)
    pubs: dict[str, Published] = field(default_factory=dict)
    srcs: dict[str, Path] = field(default_factory=dict)
    coordinator: subprocess.Popen[str] | None = None
    seed: subprocess.Popen[str] | None = None

    @property
    def coord_url(self) -> str:
        return f"http://127.0.0.1:{self.coord_port}"

    @property
    def origin_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def add_model(
        self, ref: str, files: Mapping[str, int], seed: int = 3, web_seed: bool = False
    ) -> Published:
        src = write_model_dir(self.tmp / "src" / ref.replace(":", "-"), files, seed=seed)
        return self.add_model_from(ref, src, web_seed)

    def add_model_from(self, ref: str, src: Path, web_seed: bool = False) -> Published:
        return self.add_source(ref, directory_source(src), src, web_seed)

    def add_source(self, ref: str, source: Source, src: Path, web_seed: bool = False) -> Published:
        """Publish ``source`` as ``ref``; ``src`` holds its files by path, for checks."""
        pub = publish(
            source,
            PublishOptions(
                ref=ModelRef.parse(ref),
                out=self.tmp / "pub" / ref.replace(":", "-"),
                chunk_size=CHUNK,
                web_seeds=(f"{self.origin_url}/webseed/",) if web_seed else (),
            ),
        )
        self.pubs[ref], self.srcs[ref] = pub, src
        return pub

    def start_coordinator(self) -> None:
        self.coordinator = subprocess.Popen(
            [
                str(SHOAL),
                "tracker",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.coord_port),
                "--db",
                str(self.tmp / "coord" / "registry.sqlite"),
                "--publish-token",
                "pub",
                "--fleet-token",
                "fleet",
                "--edge-token",
                "edge",
                "--rate-limit",
                "0",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_listening(self.coord_port, self.coordinator, "shoal tracker serve")
        with CoordinatorClient(self.coord_url, "pub") as cc:
            for pub in self.pubs.values():
                cc.publish(pub.manifest, pub.torrent_path.read_bytes())

    def start_seed(self, bittorrent: bool = True) -> None:
        register = ["--coordinator", self.coord_url, "--token", "edge"] if self.coordinated else []
        if not bittorrent:
            register.append("--no-bittorrent")
        self.seed = subprocess.Popen(
            [
                str(SHOAL),
                "seed",
                *(str(p.out) for p in self.pubs.values()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.http_port),
                "--bt-listen",
                f"127.0.0.1:{self.bt_port}",
                *register,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_listening(self.http_port, self.seed, "shoal seed")
        if self.coordinated and self.coordinator is not None:
            deadline = time.monotonic() + 20
            while not CoordinatorClient(self.coord_url).edges():
                assert time.monotonic() < deadline, "origin did not register"
                time.sleep(0.1)

    def kill(self, which: str) -> None:
        proc = getattr(self, which)
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
            setattr(self, which, None)

    def origin_egress(self) -> int:
        """Bytes the origin sent: HTTP bodies plus BitTorrent payload."""
        text = httpx.get(f"{self.origin_url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(("shoal_origin_bytes_served_total", "shoal_origin_bt_upload_bytes")):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def pull(self, ref: str, models: Path, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                *(str(SHOAL), "pull", ref, "--models-dir", str(models)),
                *("--host", "127.0.0.1", "--json", *map(str, args)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def coordinated_pull(self, ref: str, models: Path, *args: str) -> subprocess.Popen[str]:
        return self.pull(ref, models, "--coordinator", self.coord_url, "--token", "fleet", *args)

    def check_held(self, models: Path, ref: str) -> None:
        store = Store(models).open()
        manifest = store.resolve(ModelRef.parse(ref))
        assert manifest == self.pubs[ref].manifest
        for f in manifest.files:
            got = store.blob_path(f.sha256).read_bytes()
            assert got == (self.srcs[ref] / f.path.value).read_bytes()


def running_fleet(tmp_path: Path, ref: str = "demo:v1") -> Iterator[Fleet]:
    """A coordinator and an origin holding ``ref`` (the ``MODEL`` files), stopped after."""
    f = Fleet(tmp_path)
    f.add_model(ref, MODEL)
    try:
        f.start_coordinator()
        f.start_seed()
        yield f
    finally:
        stop_processes([p for p in (f.seed, f.coordinator) if p is not None])


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from running_fleet(tmp_path)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, object]:
    """The pull's closing JSON line; fails the test with stderr if it did not succeed."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    if err.strip():
        print(err)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines and lines[-1]["event"] == "done", out
    assert all(line["event"] == "progress" for line in lines[:-1])
    result: dict[str, object] = lines[-1]
    return result


def only_verified_blobs(models: Path) -> None:
    """Every file at a final path is named by its own SHA-256."""
    blobs = models / "blobs"
    for blob in blobs.iterdir() if blobs.exists() else ():
        assert blob.name == "sha256-" + hashlib.sha256(blob.read_bytes()).hexdigest(), blob
