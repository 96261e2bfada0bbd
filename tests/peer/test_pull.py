"""``shoal pull`` as real processes against a real coordinator and ``shoal seed``:
swarm and edges together, faults, kills and resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from peer import layout
from peer.journal import Journal
from peer.store import Store
from shoal.ref import ModelRef
from tests.conftest import SHOAL
from tests.peer.conftest import CHUNK, MODEL, Fleet, finish, only_verified_blobs
from tests.peer.test_export import read_ollama
from tests.seeder.conftest import AsyncServerThread, FaultyUpstream

SIZE = sum(MODEL.values())
NCHUNKS = sum(-(-s // CHUNK) for s in MODEL.values())


def shoal(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHOAL), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def journal_count(models: Path, fleet: Fleet, ref: str = "demo:v1") -> int:
    staging = Store(models).staging_dir(fleet.pubs[ref].manifest)
    return len(Journal(staging / "verified.log", NCHUNKS).read())


def kept_count(models: Path, fleet: Fleet, ref: str = "demo:v1") -> int:
    """Journaled chunks whose bytes are in staging and match the manifest: the verified
    work a kill left. (libtorrent reports a chunk verified while its write can still be
    queued: a kill then leaves a record without the bytes, a chunk that was in flight.)"""
    manifest = fleet.pubs[ref].manifest
    staging = Store(models).staging_dir(manifest)
    pcs = layout.pieces(manifest)
    kept = 0
    for i in Journal(staging / "verified.log", NCHUNKS).read():
        p = pcs[i]
        data = layout.read_staged(staging, manifest, p)
        kept += data is not None and layout.chunk_map(manifest, p.entry).verify(p.chunk, data)
    return kept


def test_three_pulls_at_once_share_through_the_swarm(fleet: Fleet, tmp_path: Path) -> None:
    procs = [fleet.coordinated_pull("demo:v1", tmp_path / f"m{i}") for i in range(3)]
    results = [finish(p) for p in procs]
    for i in range(3):
        fleet.check_held(tmp_path / f"m{i}", "demo:v1")
        only_verified_blobs(tmp_path / f"m{i}")
    peer = sum(int(str(r["bytes_peer"])) for r in results)
    edge = sum(int(str(r["bytes_edge"])) for r in results)
    egress = fleet.origin_egress()
    print(
        f"3 pulls of {SIZE} bytes: peers {peer}, edges {edge}, origin egress {egress} "
        f"({egress / SIZE:.2f} copies)"
    )
    for r in results:
        print({k: r[k] for k in ("seconds", "chunks_edge", "chunks_peer", "bytes_edge")})
    assert peer + edge >= 3 * SIZE
    for r in results:  # bytes received twice are reported, and are part of bytes_peer
        twice = int(str(r["bytes_redundant"]))
        assert 0 <= twice <= int(str(r["bytes_peer"]))
        assert int(str(r["bytes_peer"])) - twice + int(str(r["bytes_edge"])) >= SIZE
    assert peer > edge, "most bytes should come from peers"
    assert egress <= 1.5 * SIZE, "the origin should send about one copy"
    again = finish(fleet.coordinated_pull("demo:v1", tmp_path / "m0"))
    assert again["already_present"] is True and float(str(again["seconds"])) < 1.0


def test_web_seeds_in_the_torrent_are_not_used(tmp_path: Path) -> None:
    """libtorrent would fetch from a torrent's web seeds behind the scheduler's back: the
    origin then sent ~0.75 extra copies in a shaped fleet. Pulls take HTTP chunks only
    through the scheduler (from /blobs), never from /webseed."""
    fleet = Fleet(tmp_path, coordinated=False)
    fleet.add_model("demo:v1", MODEL, web_seed=True)
    try:
        fleet.start_seed(bittorrent=False)  # HTTP only: its web seed is all libtorrent sees
        slow = ("--max-rate", "2M")  # time enough for libtorrent to open its web seeds
        result = finish(fleet.pull("demo:v1", tmp_path / "m", "--edge", fleet.origin_url, *slow))
        fleet.check_held(tmp_path / "m", "demo:v1")
        metrics = httpx.get(f"{fleet.origin_url}/metrics", timeout=10).text
        assert 'route="blob"' in metrics
        assert 'route="webseed"' not in metrics, metrics
        assert int(str(result["bytes_peer"])) + int(str(result["bytes_edge"])) >= SIZE
    finally:
        fleet.kill("seed")


def test_coordinator_down_finishes_from_edges_and_peers(fleet: Fleet, tmp_path: Path) -> None:
    finish(fleet.coordinated_pull("demo:v1", tmp_path / "first"))
    fleet.kill("coordinator")
    t = time.monotonic()
    result = finish(fleet.coordinated_pull("demo:v1", tmp_path / "m", "--edge", fleet.origin_url))
    fleet.check_held(tmp_path / "m", "demo:v1")
    assert int(str(result["bytes_peer"])) + int(str(result["bytes_edge"])) >= SIZE
    assert time.monotonic() - t < 60


def test_edges_down_finishes_from_the_swarm(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, coordinated=False)  # the origin seeds but is no edge
    fleet.add_model("demo:v1", MODEL)
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        result = finish(
            fleet.coordinated_pull("demo:v1", tmp_path / "m", "--edge", "http://127.0.0.1:9")
        )
    finally:
        fleet.kill("seed")
        fleet.kill("coordinator")
    fleet.check_held(tmp_path / "m", "demo:v1")
    assert result["bytes_edge"] == 0 and int(str(result["bytes_peer"])) >= SIZE


def test_everything_down_fails_in_bounded_time_then_resumes(fleet: Fleet, tmp_path: Path) -> None:
    models = tmp_path / "m"
    proc = fleet.coordinated_pull(
        "demo:v1", models, "--max-rate", "1M", "--stall-timeout", "3", "--no-lsd"
    )
    deadline = time.monotonic() + 30
    while journal_count(models, fleet) < 10:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
        time.sleep(0.05)
    fleet.kill("seed")
    fleet.kill("coordinator")
    t = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t < 20
    assert proc.returncode == 6, err  # a remote failure (shoal/errors.py)
    assert "made no progress" in err and "pull again to resume" in err
    assert "Traceback" not in err
    held = journal_count(models, fleet)
    only_verified_blobs(models)
    fleet.start_coordinator()
    fleet.start_seed()
    result = finish(fleet.coordinated_pull("demo:v1", models))
    fleet.check_held(models, "demo:v1")
    print(result, held)
    assert int(str(result["chunks_resumed"])) >= held > 0


def test_edge_corrupting_one_chunk_in_ten_is_demoted(fleet: Fleet, tmp_path: Path) -> None:
    faulty = FaultyUpstream([fleet.pubs["demo:v1"].out], "corrupt10")
    with AsyncServerThread(faulty) as bad:
        result = finish(
            fleet.pull(
                "demo:v1",
                tmp_path / "m",
                "--edge",
                bad.url,
                "--edge",
                fleet.origin_url,
                "--no-lsd",  # no coordinator, no LAN peers: every chunk over HTTP
            )
        )
    fleet.check_held(tmp_path / "m", "demo:v1")
    edges = {str(e["url"]): e for e in result["edges"]}  # type: ignore[union-attr]
    print(edges)
    assert int(str(edges[bad.url]["corrupt"])) >= 1
    assert edges[bad.url]["demoted"] is True and edges[fleet.origin_url]["demoted"] is False
    assert int(str(result["chunks_rejected"])) == int(str(edges[bad.url]["corrupt"]))
    assert faulty.blob_requests < NCHUNKS  # after demotion the good edge serves


def test_kill_9_three_times_loses_only_chunks_in_flight(fleet: Fleet, tmp_path: Path) -> None:
    models = tmp_path / "m"
    rng = random.Random(os.getpid())
    held = [0]
    for _ in range(3):
        proc = fleet.pull(
            "demo:v1", models, "--edge", fleet.origin_url, "--no-lsd", "--max-rate", "1M"
        )
        deadline = time.monotonic() + 30  # a random moment once it has made progress
        while journal_count(models, fleet) <= held[-1]:  # (a loaded machine starts slowly)
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.7))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
        only_verified_blobs(models)
        assert Store(models).open().resolve(ModelRef.parse("demo:v1")) is None
        held.append(kept_count(models, fleet))
        assert held[-1] >= held[-2], "verified chunks were lost"
    result = finish(fleet.pull("demo:v1", models, "--edge", fleet.origin_url, "--no-lsd"))
    fleet.check_held(models, "demo:v1")
    resumed = int(str(result["chunks_resumed"]))
    refetched = (fleet.origin_egress() - SIZE) / CHUNK
    print(f"kept after each kill {held[1:]}, resumed {resumed}, refetched {refetched:.1f}")
    assert resumed >= held[-1] > 0
    assert int(str(result["chunks_edge"])) == NCHUNKS - resumed
    # at most the HTTP fetches in flight (8 per run) were lost per kill
    assert refetched <= 3 * 8


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_during_a_pull_then_resume(fleet: Fleet, tmp_path: Path) -> None:
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(disk)], check=True)
    try:
        models = disk / "m"
        proc = fleet.pull(
            "demo:v1", models, "--edge", fleet.origin_url, "--no-lsd", "--max-rate", "2M"
        )
        deadline = time.monotonic() + 30
        while journal_count(models, fleet) < 5:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        filler = disk / "filler"
        # unbuffered: a short write leaves nothing behind for close() to fail on
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\1" * 65536)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 5, (out, err)  # this host's environment: exit code 5
        assert "No space left on device" in err and "verified chunks are kept" in err
        assert "Traceback" not in err
        only_verified_blobs(models)
        filler.unlink()
        result = finish(fleet.pull("demo:v1", models, "--edge", fleet.origin_url, "--no-lsd"))
        assert int(str(result["chunks_resumed"])) >= 5
        fleet.check_held(models, "demo:v1")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root (root ignores modes)")
def test_models_dir_not_writable_fails_before_any_download(fleet: Fleet, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        before = fleet.origin_egress()
        r = shoal("pull", "demo:v1", "--edge", fleet.origin_url, "--models-dir", ro / "m")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert r.returncode == 5 and "Traceback" not in r.stderr
    assert f"models dir {ro / 'm'} is not writable" in r.stderr
    assert fleet.origin_egress() == before


def test_new_tag_moves_only_the_changed_file(tmp_path: Path) -> None:
    files = {"a.bin": 1_000_000, "b.bin": 700_000, "c.json": 5_000}
    fleet = Fleet(tmp_path)
    fleet.add_model("demo:1", files)
    # tag 2: b.bin changed, a.bin and c.json identical
    src2 = tmp_path / "src2"
    src2.mkdir()
    for rel in files:
        data = (fleet.srcs["demo:1"] / rel).read_bytes()
        (src2 / rel).write_bytes(data if rel != "b.bin" else data[::-1])
    fleet.add_model_from("demo:2", src2)
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        models = tmp_path / "m"
        finish(fleet.coordinated_pull("demo:1", models))
        before = fleet.origin_egress()
        result = finish(fleet.coordinated_pull("demo:2", models))
        moved = fleet.origin_egress() - before
    finally:
        fleet.kill("seed")
        fleet.kill("coordinator")
    fleet.check_held(models, "demo:2")
    fleet.check_held(models, "demo:1")
    print(f"tag 2 moved {moved} bytes; b.bin is {files['b.bin']}")
    assert result["bytes_reused"] == files["a.bin"] + files["c.json"]
    assert result["chunks"] == -(-files["b.bin"] // CHUNK)
    assert files["b.bin"] <= moved < files["b.bin"] + 2 * CHUNK


def test_pull_exports_and_rm_and_verify(fleet: Fleet, tmp_path: Path) -> None:
    models = tmp_path / "m"
    p = fleet.coordinated_pull(
        "demo:v1", models, "--ollama", tmp_path / "o", "--hf", tmp_path / "hf"
    )
    finish(p)
    layers = read_ollama(tmp_path / "o", "demo:v1")
    src = fleet.srcs["demo:v1"]
    assert layers["application/vnd.ollama.image.model"] == (src / "weights/model.gguf").read_bytes()
    snapshots = list((tmp_path / "hf").glob("models--*/snapshots/*"))
    assert len(snapshots) == 1
    for rel in MODEL:
        assert (snapshots[0] / rel).read_bytes() == (src / rel).read_bytes()
    r = shoal("verify", "--models-dir", models)
    assert r.returncode == 0 and "all good" in r.stdout
    # a flipped byte: verify finds the chunk, moves the blob out; a pull fetches one chunk
    manifest = fleet.pubs["demo:v1"].manifest
    weights = next(f for f in manifest.files if f.path.value == "weights/model.gguf")
    blob = Store(models).blob_path(weights.sha256)
    blob.unlink()  # the export's hard links share the inode: write a fresh corrupt copy
    data = bytearray((src / "weights/model.gguf").read_bytes())
    data[3 * CHUNK + 7] ^= 1
    blob.write_bytes(bytes(data))
    r = shoal("verify", "demo:v1", "--models-dir", models)
    assert r.returncode == 1 and "1 of" in r.stderr and "`shoal pull library/demo:v1`" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert not blob.exists()
    only_verified_blobs(models)
    result = finish(fleet.coordinated_pull("demo:v1", models))
    assert result["chunks"] == weights.num_chunks
    assert int(str(result["chunks_resumed"])) == weights.num_chunks - 1
    fleet.check_held(models, "demo:v1")
    r = shoal("rm", "demo:v1", "--models-dir", models)
    assert r.returncode == 0 and "freed" in r.stdout
    assert not list((models / "blobs").iterdir())
    ls = shoal("ls", "--models-dir", models)
    assert ls.returncode == 0 and ls.stdout == "" and f"no models in {models}" in ls.stderr


def test_bad_references_and_nothing_to_ask(tmp_path: Path) -> None:
    r = shoal("pull", "demo:v1", "--models-dir", tmp_path / "m")
    assert r.returncode == 2 and "--coordinator" in r.stderr
    r = shoal("pull", "Bad Ref!", "--models-dir", tmp_path / "m")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    t = time.monotonic()
    r = shoal(
        "pull",
        "demo:v1",
        "--coordinator",
        "http://127.0.0.1:9",
        "--edge",
        "http://127.0.0.1:9",
        "--models-dir",
        tmp_path / "m",
    )
    assert r.returncode == 6 and "cannot resolve" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t < 60
