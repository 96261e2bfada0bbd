"""Audit defect 3: one publisher must not plant bytes under another model's blob digest.

An attacker with a publisher token registers ``evil:v1``: its own bytes, chunk digests
and torrent, but with the file digest of ``legit:v1``'s weights. Every chunk verifies
against that manifest, so before the fix the pull moved the evil bytes into
``blobs/sha256-<legit>``, and a later pull of ``legit:v1`` found them "already present".

The fleet's coordinator now refuses such a manifest once legit's blob is registered
(tests/tracker), so here the lie comes from a coordinator of the attacker's: the host's
own check is what is tested, whatever coordinator it trusted.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.coordinator_client import CoordinatorClient
from shoal.manifest import Manifest
from shoal.publishing.publish import MANIFEST_MSGPACK
from shoal.testing import ServerThread, free_port, start_local_seed, stop_processes
from tests.conftest import SHOAL
from tests.peer.conftest import MODEL, Fleet, finish, only_verified_blobs, running_fleet
from tracker.app import create_app
from tracker.settings import TrackerSettings

WEIGHTS = "weights/model.gguf"


def doctored(fleet: Fleet, tmp: Path, coordinator: str) -> Path:
    """A published directory of ``evil:v1`` whose weights claim legit's digest, registered
    with ``coordinator``."""
    legit = fleet.pubs["legit:v1"].manifest
    evil_pub = fleet.add_model("evil:v1", MODEL, seed=99)
    evil = evil_pub.manifest
    claimed = next(f.sha256 for f in legit.files if f.path.value == WEIGHTS)
    files = tuple(
        dataclasses.replace(f, sha256=claimed) if f.path.value == WEIGHTS else f for f in evil.files
    )
    lie = dataclasses.replace(evil, files=files)
    out = tmp / "attacker"
    shutil.copytree(evil_pub.out, out)
    (out / MANIFEST_MSGPACK).write_bytes(lie.canonical_bytes)
    real = next(f.sha256 for f in evil.files if f.path.value == WEIGHTS)
    (out / "blobs" / real.filename).rename(out / "blobs" / claimed.filename)
    with CoordinatorClient(coordinator, "pub") as cc:
        cc.publish(Manifest.load(lie.canonical_bytes), evil_pub.torrent_path.read_bytes())
    return out


@pytest.fixture
def rogue(tmp_path: Path) -> Iterator[str]:
    """The attacker's coordinator."""
    settings = TrackerSettings(
        db=tmp_path / "rogue" / "r.sqlite", publish_tokens=("pub",), fleet_token="fleet"
    )
    with ServerThread(create_app(settings)) as coord:
        yield coord.url


def pull_evil(fleet: Fleet, tmp_path: Path, rogue: str, models: Path) -> tuple[int, str, str]:
    attacker_dir = doctored(fleet, tmp_path, rogue)
    port = free_port()
    attacker = start_local_seed(SHOAL, [attacker_dir], port, free_port(), "--no-bittorrent")
    try:
        proc = fleet.pull(
            "evil:v1",
            models,
            *("--coordinator", rogue, "--token", "fleet"),
            *("--edge", f"http://127.0.0.1:{port}", "--no-lsd"),
        )
        out, err = proc.communicate(timeout=120)
    finally:
        stop_processes([attacker])
    return proc.returncode, out, err


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from running_fleet(tmp_path, "legit:v1")


def test_a_lying_file_digest_plants_nothing(fleet: Fleet, tmp_path: Path, rogue: str) -> None:
    models = tmp_path / "victim"
    code, out, err = pull_evil(fleet, tmp_path, rogue, models)
    assert code != 0, out
    assert "whole file hashes to" in err and "Traceback" not in err, err
    only_verified_blobs(models)
    assert not (models / "tags" / "registry.ollama.ai" / "library" / "evil").exists()

    result = finish(fleet.coordinated_pull("legit:v1", models, "--no-lsd"))
    assert result["already_present"] is False
    fleet.check_held(models, "legit:v1")
    only_verified_blobs(models)


def test_export_of_a_model_pulled_after_the_attempt_is_the_real_one(
    fleet: Fleet, tmp_path: Path, rogue: str
) -> None:
    """The same, read through ``shoal export --hf``: the files exported are legit's."""
    models = tmp_path / "victim"
    pull_evil(fleet, tmp_path, rogue, models)
    finish(fleet.coordinated_pull("legit:v1", models, "--no-lsd"))
    hf = tmp_path / "hf"
    done = subprocess.run(
        [str(SHOAL), "export", "legit:v1", "--models-dir", str(models), "--hf", str(hf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    exported = next(hf.rglob("snapshots/*/" + WEIGHTS))
    assert exported.read_bytes() == (fleet.srcs["legit:v1"] / WEIGHTS).read_bytes()
