"""The agent keeps its store within the disk budget: least recently used unpinned models go
(seeding stops first), pinned ones stay, a pull that cannot fit fails before fetching; and
``shoal ls/rm/pin/unpin/verify`` go through the running agent."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx

from peer.store import Store
from shoal.ref import ModelRef
from tests.conftest import SHOAL
from tests.peer.conftest import Fleet
from tests.peer.test_agent import api_pull, start_agent

SMALL = {"model.gguf": 2_000_000}  # 31 chunks of 64 KiB


def shoal(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHOAL), *args, "--models-dir", str(store)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def stop(agent: subprocess.Popen[str] | None, fleet: Fleet) -> None:
    if agent is not None:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        assert "Traceback" not in err, err
    fleet.kill("seed")


def test_budget_evicts_lru_unpinned_and_refuses_what_cannot_fit(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, coordinated=False)
    for i, name in enumerate(("a:v1", "b:v1", "c:v1")):
        fleet.add_model(name, SMALL, seed=10 + i)
    fleet.add_model("big:v1", {"model.gguf": 8_000_000}, seed=20)
    store = tmp_path / "store"
    budget = ("--max-store-size", "5MB", "--min-free", "0")
    agent = None
    try:
        fleet.start_seed()
        agent, url, token = start_agent(store, "--edge", fleet.origin_url, *budget)
        auth = {"Authorization": f"Bearer {token}"}
        for name in ("a:v1", "b:v1"):
            assert api_pull(url, token, name)["state"] == "done"
        # a is the least recently used; pinned, it stays, and b goes for c
        pinned = shoal(store, "pin", "a:v1")
        assert pinned.returncode == 0 and "pinned library/a:v1" in pinned.stdout, pinned.stderr
        assert api_pull(url, token, "c:v1")["state"] == "done"
        models = {m["ref"]: m for m in httpx.get(f"{url}/v1/models", headers=auth).json()}
        assert set(models) == {"library/a:v1", "library/c:v1"}
        assert models["library/a:v1"]["pinned"] and models["library/c:v1"]["seeding"]
        b_blob = fleet.pubs["b:v1"].manifest.files[0].sha256.filename
        assert not (store / "blobs" / b_blob).exists()  # deleted, not only untagged
        status = httpx.get(f"{url}/v1/status", headers=auth).json()
        assert status["evicted"] == 1 and status["store_bytes"] <= 5_000_000
        assert status["budget"] == {"max_store": 5_000_000, "min_free": 0}

        # 8 MB cannot fit in 5 MB whatever goes: refused before a byte is fetched
        served = fleet.origin_egress()
        failed = api_pull(url, token, "big:v1")
        assert failed["state"] == "failed"
        error = str(failed["error"])
        assert "cannot pull library/big:v1" in error and "library/a:v1" in error, error
        assert "max_store_size" in error
        assert fleet.origin_egress() - served < 4096  # the resolve and torrent only
        big = Store(store).staging_dir(fleet.pubs["big:v1"].manifest)
        assert not big.exists() or not any(big.iterdir())
        models_after = httpx.get(f"{url}/v1/models", headers=auth).json()
        assert {m["ref"] for m in models_after} == {"library/a:v1", "library/c:v1"}

        # rm through the agent: seeding stops, bytes freed; unpin; ls shows it all
        removed = shoal(store, "rm", "c:v1")
        assert removed.returncode == 0 and "removed library/c:v1, freed 1.9 MiB" in removed.stdout
        assert httpx.get(f"{url}/v1/status", headers=auth).json()["store_bytes"] < 2_100_000
        text = httpx.get(f"{url}/metrics", headers=auth).text
        assert "shoal_swarms_seeding 1.0" in text
        assert shoal(store, "unpin", "a:v1").returncode == 0
        listing = shoal(store, "ls")
        header, first = listing.stdout.splitlines()[:2]
        assert header.split() == ["NAME", "ID", "SIZE", "LAST", "USED"]
        assert first.split()[0] == "library/a:v1" and "pinned" not in listing.stdout
        assert "seeding" in listing.stdout
        gone = shoal(store, "rm", "c:v1")
        assert gone.returncode != 0 and "not in" in gone.stderr and "Traceback" not in gone.stderr
    finally:
        stop(agent, fleet)


def test_verify_through_the_agent_stops_seeding_a_bad_model(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, coordinated=False)
    fleet.add_model("a:v1", SMALL, seed=10)
    store = tmp_path / "store"
    agent = None
    try:
        fleet.start_seed()
        agent, url, token = start_agent(store, "--edge", fleet.origin_url)
        auth = {"Authorization": f"Bearer {token}"}
        assert api_pull(url, token, "a:v1")["state"] == "done"
        good = shoal(store, "verify", "--json")
        assert good.returncode == 0 and json.loads(good.stdout)["bad"] == []
        blob = store / "blobs" / fleet.pubs["a:v1"].manifest.files[0].sha256.filename
        with blob.open("r+b") as f:  # rot one byte in chunk 3
            f.seek(3 * 64 * 1024 + 5)
            f.write(b"\xff")
        bad = shoal(store, "verify", "--json")
        assert bad.returncode == 1, bad.stderr
        report = json.loads(bad.stdout)
        assert [(b["ref"], b["chunks"]) for b in report["bad"]] == [("library/a:v1", [3])]
        models = httpx.get(f"{url}/v1/models", headers=auth).json()
        assert models == [] or not models[0]["seeding"]
        assert not blob.exists()  # left the store for a re-pull of that one chunk
        missing = httpx.post(f"{url}/v1/verify", json={"ref": "nope:v9"}, headers=auth)
        assert missing.status_code == 404
        assert httpx.post(f"{url}/v1/verify", content=b"[", headers=auth).status_code == 400
        assert httpx.delete(f"{url}/v1/models/nope:v9", headers=auth).status_code == 404
        assert httpx.post(f"{url}/v1/models/nope:v9/pin", headers=auth).status_code == 404
        assert httpx.delete(f"{url}/v1/models/Bad%20Ref!", headers=auth).status_code == 400
    finally:
        stop(agent, fleet)


def test_pins_and_lru_in_process(tmp_path: Path) -> None:
    """Without an agent the same commands work on the store directly."""
    fleet = Fleet(tmp_path, coordinated=False)
    fleet.add_model("a:v1", SMALL, seed=10)
    store = tmp_path / "store"
    try:
        fleet.start_seed()
        pulled = shoal(store, "pull", "a:v1", "--edge", fleet.origin_url, "--no-lsd")
        assert pulled.returncode == 0, pulled.stderr
        s = Store(store).open()
        ref = ModelRef.parse("a:v1")
        before = s.last_used(ref)
        again = shoal(store, "pull", "a:v1", "--edge", fleet.origin_url)
        assert again.returncode == 0 and s.last_used(ref) > before  # a cache hit is a use
        assert shoal(store, "pin", "a:v1").returncode == 0
        assert s.pinned() == {ref}
        assert "pinned" in shoal(store, "ls").stdout
        nope = shoal(store, "pin", "zzz:v1")
        assert nope.returncode != 0 and "cannot pin library/zzz:v1" in nope.stderr
        assert shoal(store, "rm", "a:v1").returncode == 0
        assert s.pinned() == set()  # removing a model drops its pin
    finally:
        fleet.kill("seed")
