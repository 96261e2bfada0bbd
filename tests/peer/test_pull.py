"""``shoal pull`` as real processes against a real coordinator and ``shoal seed``."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.store import Store
from shoal.coordinator_client import CoordinatorClient
from shoal.ref import ModelRef
from shoal.testing import ServerThread
from tests.conftest import SHOAL
from tests.peer.test_export import read_ollama
from tests.seeder.test_origin import FILES, Origin, start_seed
from tracker.app import create_app
from tracker.settings import TrackerSettings


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[str, Origin]]:
    settings = TrackerSettings(
        db=tmp_path / "t" / "r.sqlite", publish_tokens=("pub",), fleet_token="fleet", rate_limit=0
    )
    with ServerThread(create_app(settings)) as coord:
        for origin in start_seed(tmp_path, "--coordinator", coord.url, "--token", "fleet"):
            with CoordinatorClient(coord.url, "pub") as cc:
                cc.publish(origin.pub.manifest, origin.pub.torrent_path.read_bytes())
            deadline = time.monotonic() + 20
            while not CoordinatorClient(coord.url).edges():
                assert time.monotonic() < deadline, "origin did not register"
                time.sleep(0.1)
            yield coord.url, origin


def pull(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SHOAL), "pull", *map(str, args), "--host", "127.0.0.1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def held(models: Path, origin: Origin) -> None:
    store = Store(models).open()
    manifest = store.resolve(ModelRef.parse("demo:v1"))
    assert manifest == origin.pub.manifest
    for f in manifest.files:
        assert store.blob_path(f.sha256).read_bytes() == (origin.src / f.path.value).read_bytes()
    assert not any(store.staging.iterdir())


def test_two_pulls_at_once_then_a_cache_hit(fleet: tuple[str, Origin], tmp_path: Path) -> None:
    url, origin = fleet
    procs = [
        pull(
            "demo:v1", "--coordinator", url, "--token", "fleet", "--models-dir", tmp_path / f"m{i}"
        )
        for i in range(2)
    ]
    results = [finish(p) for p in procs]
    for i in range(2):
        held(tmp_path / f"m{i}", origin)
    total = sum(FILES.values())
    assert sum(int(r["bytes_peer"]) + int(r["bytes_edge"]) for r in results) >= total
    again = finish(
        pull("demo:v1", "--coordinator", url, "--token", "fleet", "--models-dir", tmp_path / "m0")
    )
    assert again["already_present"] is True and float(again["seconds"]) < 1.0


def test_edge_only_without_coordinator(fleet: tuple[str, Origin], tmp_path: Path) -> None:
    _, origin = fleet
    result = finish(pull("demo:v1", "--edge", origin.url, "--models-dir", tmp_path / "m"))
    # no coordinator: stock libtorrent behaviour for the swarm (the seed is found on the LAN
    # by LSD), chunks no connected peer has come from the edge
    assert int(result["bytes_edge"]) + int(result["bytes_peer"]) >= sum(FILES.values())
    held(tmp_path / "m", origin)


def test_everything_down_fails_clearly(tmp_path: Path) -> None:
    t = time.monotonic()
    r = subprocess.run(
        [
            str(SHOAL),
            "pull",
            "demo:v1",
            "--coordinator",
            "http://127.0.0.1:9",
            "--edge",
            "http://127.0.0.1:9",
            "--models-dir",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "cannot resolve" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t < 60
    r = subprocess.run(
        [str(SHOAL), "pull", "demo:v1", "--models-dir", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--coordinator" in r.stderr


def test_export_and_rm_from_the_cli(fleet: tuple[str, Origin], tmp_path: Path) -> None:
    _, origin = fleet
    models = tmp_path / "m"
    finish(pull("demo:v1", "--edge", origin.url, "--models-dir", models))
    r = subprocess.run(
        [
            str(SHOAL),
            "export",
            "demo:v1",
            "--hf",
            str(tmp_path / "hf"),
            "--models-dir",
            str(models),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    snapshot = Path(r.stdout.split(" to ")[1].strip())
    for rel in FILES:
        assert (snapshot / rel).read_bytes() == (origin.src / rel).read_bytes()
    r = subprocess.run(
        [
            str(SHOAL),
            "export",
            "demo:v1",
            "--ollama",
            str(tmp_path / "o"),
            "--models-dir",
            str(models),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr  # one .gguf file: ollama gets a manifest made for it
    layers = read_ollama(tmp_path / "o", "demo:v1")
    assert (
        layers["application/vnd.ollama.image.model"]
        == (origin.src / "weights/model.gguf").read_bytes()
    )
    r = subprocess.run(
        [str(SHOAL), "rm", "demo:v1", "--models-dir", str(models)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "freed" in r.stdout
    assert not list((models / "blobs").iterdir())
    ls = subprocess.run(
        [str(SHOAL), "ls", "--models-dir", str(models)], capture_output=True, text=True, timeout=60
    )
    assert ls.returncode == 0 and ls.stdout == ""
