"""Issue 27, item 6: a host configured with only ``--coordinator`` pulls while the
coordinator is down, with what it last learnt from it (peer/learnt.py).

Before, such a pull knew no edge and no binding for the tag and failed ("cannot resolve").
Now the agent keeps the coordinator's edge list and catalog beside its store; the pull
takes the tag's digest from there and the manifest from an edge, checked against it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from peer import learnt
from shoal.coordinator_client import CoordinatorClient
from shoal.testing import free_port, stop_processes, wait_listening
from tests.conftest import SHOAL
from tests.peer.conftest import MODEL, Fleet, only_verified_blobs


@pytest.fixture
def fleet_with_edge(tmp_path: Path) -> Iterator[tuple[Fleet, str]]:
    """Coordinator, origin and a registered edge that has served the model once."""
    fleet = Fleet(tmp_path)
    fleet.add_model("demo:v1", MODEL)
    edge: subprocess.Popen[str] | None = None
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        edge = subprocess.Popen(
            [
                *(str(SHOAL), "edge", "serve", "--upstream", fleet.origin_url),
                *("--host", "127.0.0.1", "--port", str(port), "--public-url", url),
                *("--cache-dir", str(tmp_path / "edge"), "--coordinator", fleet.coord_url),
                *("--token", "edge"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_listening(port, edge, "shoal edge serve")
        for f in fleet.pubs["demo:v1"].manifest.files:  # the edge caches chunks and maps
            assert httpx.get(f"{url}/blobs/{f.sha256}", timeout=30).status_code == 200
        deadline = time.monotonic() + 20
        while url not in {e["url"] for e in CoordinatorClient(fleet.coord_url).edges()}:
            assert time.monotonic() < deadline, "the edge did not register"
            time.sleep(0.1)
        yield fleet, url
    finally:
        stop_processes([p for p in (edge, fleet.seed, fleet.coordinator) if p is not None])


def start_agent(models: Path, coordinator: str) -> subprocess.Popen[str]:
    api = free_port()
    proc = subprocess.Popen(
        [
            *(str(SHOAL), "agent", "--models-dir", str(models), "--api-port", str(api)),
            *("--host", "127.0.0.1", "--coordinator", coordinator, "--token", "fleet"),
            *("--mirror", "off"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SHOAL_AGENT_LEARN_EVERY": "0.5", "SHOAL_AGENT_REPORT_EVERY": "0.5"},
    )
    wait_listening(api, proc, "shoal agent")
    return proc


def pull(models: Path, ref: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHOAL), "pull", ref, "--models-dir", str(models), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_agent_pulls_through_the_edge_it_learnt_while_the_coordinator_is_down(
    fleet_with_edge: tuple[Fleet, str], tmp_path: Path
) -> None:
    fleet, edge = fleet_with_edge
    models = tmp_path / "b"
    agent = start_agent(models, fleet.coord_url)
    try:
        deadline = time.monotonic() + 20
        while True:  # the agent has learnt the edge and the tag
            known = learnt.load(models, fleet.coord_url)
            if known.refs and edge in {u for u, _ in known.edges}:
                break
            assert time.monotonic() < deadline, "the agent learnt nothing"
            time.sleep(0.1)
        assert str(known.digest(fleet.pubs["demo:v1"].manifest.ref)) == str(
            fleet.pubs["demo:v1"].manifest.digest
        )
        fleet.kill("coordinator")
        r = pull(models, "demo:v1")
        assert r.returncode == 0, r.stderr
        done = json.loads(r.stdout.splitlines()[-1])
        assert done["event"] == "done" and done.get("agent"), done
        fleet.check_held(models, "demo:v1")
        only_verified_blobs(models)
        # a tag the coordinator never named has no binding: refused, saying why
        r = pull(models, "other:v1")
        assert r.returncode != 0 and "cannot resolve" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    assert "unreachable" in err, err


def test_a_damaged_learnt_file_is_ignored_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / learnt.LEARNT_FILE).write_text('{"coordinator": "http://c", "edges": 3}')
    assert learnt.load(tmp_path, "http://c") == learnt.Learnt("http://c")
    (tmp_path / learnt.LEARNT_FILE).write_bytes(b"x" * (learnt.MAX_BYTES + 1))
    assert learnt.load(tmp_path, "http://c").refs == {}


def test_what_another_coordinator_said_is_not_used(tmp_path: Path) -> None:
    from shoal.digest import Digest
    from shoal.ref import ModelRef

    d = Digest.of(b"m")
    known = learnt.Learnt("http://a:1").with_refs({str(ModelRef.parse("x:1")): d}, 5.0)
    learnt.save(tmp_path, known)
    assert learnt.load(tmp_path, "http://a:1").digest(ModelRef.parse("x:1")) == d
    assert learnt.load(tmp_path, "http://b:1").digest(ModelRef.parse("x:1")) is None
    for bad in (
        {"coordinator": "http://a:1", "at": 1, "edges": [], "refs": {"x:1": "md5:0"}},
        {"coordinator": "http://a:1", "at": 1, "edges": [{"url": "ftp://e", "kind": "edge"}]},
        {"coordinator": "http://a:1", "at": 1, "edges": [], "refs": {"../x:1": str(d)}},
    ):
        (tmp_path / learnt.LEARNT_FILE).write_text(json.dumps({"refs": {}, **bad}))
        assert learnt.load(tmp_path, "http://a:1") == learnt.Learnt("http://a:1"), bad
