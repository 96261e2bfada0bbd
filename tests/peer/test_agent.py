"""``shoal agent`` as a real process: it seeds what the store holds to a real libtorrent
leecher, and its local API checks the token and the Host header."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import libtorrent as lt
import pytest

from peer.agent.auth import host_allowed
from peer.agent.daemon import PullJob
from peer.journal import Journal
from peer.store import Store
from shoal.ref import ModelRef
from shoal.testing import free_port, wait_listening
from tests.conftest import SHOAL, quiet_lt_session
from tests.peer.conftest import MODEL, Fleet, finish

SIZE = sum(MODEL.values())


@pytest.fixture
def agent(fleet: Fleet, tmp_path: Path) -> Iterator[tuple[str, str, int, Path]]:
    """A store filled by a real pull, then the origin stopped and an agent started on it."""
    models = tmp_path / "store"
    finish(fleet.pull("demo:v1", models, "--edge", fleet.origin_url, "--no-lsd"))
    fleet.kill("seed")
    api, bt = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *(str(SHOAL), "agent", "--models-dir", str(models), "--api-port", str(api)),
            *("--host", "127.0.0.1", "--port", str(bt), "--no-lsd", "--mirror", "off"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(api, proc, "shoal agent")
        token = (models / "agent.token").read_text().strip()
        yield f"http://127.0.0.1:{api}", token, bt, models
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode in (0, 128 + signal.SIGTERM), err
        assert "Traceback" not in err


def test_api_token_and_host_checks(agent: tuple[str, str, int, Path]) -> None:
    url, token, _, models = agent
    assert stat.S_IMODE((models / "agent.token").stat().st_mode) == 0o600
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer x"}).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    rebound = httpx.get(f"{url}/v1/models", headers={**auth, "Host": "evil.example:8473"})
    assert rebound.status_code == 403
    models_seen = httpx.get(f"{url}/v1/models", headers=auth).json()
    assert [m["ref"] for m in models_seen] == ["library/demo:v1"]
    assert models_seen[0]["seeding"] is True
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_seeds_the_store_to_a_leecher(
    agent: tuple[str, str, int, Path], fleet: Fleet, tmp_path: Path
) -> None:
    url, token, bt, _ = agent
    ses = quiet_lt_session()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(fleet.pubs["demo:v1"].torrent_path.read_bytes())
    params.save_path = str(tmp_path / "leech")
    h = ses.add_torrent(params)
    h.connect_peer(("127.0.0.1", bt))
    deadline = time.monotonic() + 60
    while not h.status().is_seeding:
        assert time.monotonic() < deadline, "the leecher did not finish from the agent"
        time.sleep(0.1)
    ses.remove_torrent(h)
    src = fleet.srcs["demo:v1"]
    for f in fleet.pubs["demo:v1"].manifest.files:
        got = tmp_path / "leech" / "demo-v1" / f.path.value
        deadline = time.monotonic() + 10
        while got.stat().st_size != f.size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got.read_bytes() == (src / f.path.value).read_bytes()
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    uploaded = next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("shoal_seed_upload_bytes ")
    )
    assert uploaded >= sum(f.size for f in fleet.pubs["demo:v1"].manifest.files)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8473", True),
        ("localhost", True),
        ("[::1]:8473", True),
        ("evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
        (None, False),
    ],
)
def test_host_names(host: str | None, ok: bool) -> None:
    assert host_allowed(host) is ok


def start_agent(models: Path, *args: str) -> tuple[subprocess.Popen[str], str, str]:
    api = free_port()
    proc = subprocess.Popen(
        [
            *(str(SHOAL), "agent", "--models-dir", str(models), "--api-port", str(api)),
            *("--host", "127.0.0.1", "--no-lsd", "--mirror", "off", *args),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SHOAL_AGENT_REPORT_EVERY": "0.5"},
    )
    wait_listening(api, proc, "shoal agent")
    deadline = time.monotonic() + 10
    while not (models / "agent.json").exists():  # written once the API serves
        assert time.monotonic() < deadline and proc.poll() is None, "no agent.json"
        time.sleep(0.02)
    return proc, f"http://127.0.0.1:{api}", (models / "agent.token").read_text().strip()


def api_pull(url: str, token: str, ref: str) -> dict[str, object]:
    auth = {"Authorization": f"Bearer {token}"}
    job = httpx.post(f"{url}/v1/pulls", json={"ref": ref}, headers=auth)
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 90
    while True:
        state: dict[str, object] = httpx.get(
            f"{url}/v1/pulls/{job.json()['id']}", headers=auth
        ).json()
        if state["state"] != "running":
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.2)


def test_second_agent_pulls_from_the_first(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, coordinated=False)  # the origin is an edge only for agent A
    fleet.add_model("demo:v1", MODEL)
    procs: list[subprocess.Popen[str]] = []
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        coord = ("--coordinator", fleet.coord_url, "--token", "fleet")
        a, a_url, a_token = start_agent(tmp_path / "a", *coord, "--edge", fleet.origin_url)
        procs.append(a)
        done = api_pull(a_url, a_token, "demo:v1")
        assert done["state"] == "done", done
        b, b_url, b_token = start_agent(tmp_path / "b", *coord)  # no edge at all
        procs.append(b)
        got = api_pull(b_url, b_token, "demo:v1")
        assert got["state"] == "done", got
        result = got["result"]
        assert isinstance(result, dict)
        assert result["bytes_edge"] == 0 and int(result["bytes_peer"]) >= SIZE
        text = httpx.get(f"{a_url}/metrics", headers={"Authorization": f"Bearer {a_token}"}).text
        uploaded = next(
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("shoal_seed_upload_bytes ")
        )
        print(f"agent B: {result}; agent A uploaded {uploaded:.0f} bytes")
        assert uploaded >= 0.9 * SIZE
        total = next(
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("shoal_upload_bytes_total ")
        )
        assert total >= uploaded  # seeding counted in the counter too
        fleet.check_held(tmp_path / "b", "demo:v1")
        bad = httpx.post(
            f"{b_url}/v1/pulls",
            json={"ref": "Bad Ref!"},
            headers={"Authorization": f"Bearer {b_token}"},
        )
        assert bad.status_code == 400
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=30)
        fleet.kill("seed")
        fleet.kill("coordinator")


def test_cli_pull_delegates_to_the_running_agent(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.add_model("demo:v1", MODEL)
    store = tmp_path / "store"
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        agent, url, token = start_agent(store, "--coordinator", fleet.coord_url, "--token", "fleet")
        try:
            assert (store / "agent.json").exists()
            r = subprocess.run(
                [str(SHOAL), "pull", "demo:v1", "--models-dir", str(store), "--json"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert r.returncode == 0, r.stderr
            lines = [json.loads(line) for line in r.stdout.splitlines()]
            assert lines[-1]["event"] == "done" and lines[-1]["agent"] == url
            assert int(lines[-1]["bytes_edge"]) + int(lines[-1]["bytes_peer"]) >= SIZE
            auth = {"Authorization": f"Bearer {token}"}
            jobs = httpx.get(f"{url}/v1/pulls", headers=auth)
            assert [j["state"] for j in jobs.json()] == ["done"]  # the agent ran it
            fleet.check_held(store, "demo:v1")
            # a status request that may wait returns as soon as its pull has ended
            missing = httpx.post(f"{url}/v1/pulls", json={"ref": "nope:1"}, headers=auth).json()
            asked = time.monotonic()
            ended = httpx.get(f"{url}/v1/pulls/{missing['id']}?wait=8", headers=auth, timeout=30)
            assert ended.json()["state"] == "failed" and time.monotonic() - asked < 4
            # flags are still checked when the agent runs the pull
            bad = subprocess.run(
                [str(SHOAL), "pull", "demo:v1", "--models-dir", str(store), "--max-rate", "fast"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert bad.returncode != 0 and "max_rate" in bad.stderr
            assert "Traceback" not in bad.stderr
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.communicate(timeout=30)
        assert not (store / "agent.json").exists()  # gone with the agent: in-process again
        r = subprocess.run(
            [str(SHOAL), "pull", "demo:v1", "--models-dir", str(store), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0 and "agent" not in json.loads(r.stdout.splitlines()[-1])
    finally:
        fleet.kill("seed")
        fleet.kill("coordinator")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_restarted_agent_resumes_its_pull(tmp_path: Path, sig: signal.Signals) -> None:
    fleet = Fleet(tmp_path, coordinated=False)
    fleet.add_model("demo:v1", MODEL)
    store = tmp_path / "store"
    args = ("--edge", fleet.origin_url, "--max-rate", "1M")
    procs: list[subprocess.Popen[str]] = []
    try:
        fleet.start_seed()
        agent, url, token = start_agent(store, *args)
        procs.append(agent)
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{url}/v1/pulls", json={"ref": "demo:v1"}, headers=auth).is_success
        staging = Store(store).staging_dir(fleet.pubs["demo:v1"].manifest)
        deadline = time.monotonic() + 30
        while len(Journal(staging / "verified.log", 200).read()) < 10:
            assert time.monotonic() < deadline, "the pull made no progress"
            time.sleep(0.05)
        agent.send_signal(sig)
        agent.communicate(timeout=30)
        held = len(Journal(staging / "verified.log", 200).read())
        agent, url, token = start_agent(store, *args)  # nobody asks again: it resumes alone
        procs.append(agent)
        auth = {"Authorization": f"Bearer {token}"}
        resumed = httpx.get(f"{url}/v1/pulls", headers=auth).json()
        assert [j["state"] for j in resumed] == ["running"]
        # a CLI asking again (after the restart) joins that pull rather than start another
        again = httpx.post(f"{url}/v1/pulls", json={"ref": "demo:v1"}, headers=auth).json()
        assert again["id"] == resumed[0]["id"]
        deadline = time.monotonic() + 60
        while True:
            jobs = httpx.get(f"{url}/v1/pulls", headers=auth).json()
            if jobs and jobs[0]["state"] != "running":
                break
            assert time.monotonic() < deadline, jobs
            time.sleep(0.2)
        job = httpx.get(f"{url}/v1/pulls/{jobs[0]['id']}", headers=auth).json()
        assert job["state"] == "done", job
        # a SIGKILL may cut the writes libtorrent had queued: their records outran their
        # bytes (peer/engine.py, on_piece), and those chunks are fetched again
        lost = held - int(job["result"]["chunks_resumed"])
        assert held >= 10 and lost <= (0 if sig == signal.SIGTERM else 4), (held, lost)
        fleet.check_held(store, "demo:v1")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=30)
        fleet.kill("seed")


def test_a_defect_in_a_pull_fails_its_job_and_never_leaves_it_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception that is not a ``ShoalError`` (a defect) fails the job with a message
    for its follower and the traceback in the agent's log. It had left the job "running",
    and `shoal pull` following it waited for ever (seen when a sim ran half-updated code)."""
    import peer.engine
    from peer.agent.daemon import Agent
    from peer.agent.settings import AgentSettings

    async def broken(*_args: object) -> None:
        raise AttributeError("'Swarm' object has no attribute 'received'")

    monkeypatch.setattr(peer.engine, "pull", broken)
    agent = Agent(Store(tmp_path / "models").open(), AgentSettings(), "token")

    async def follow() -> PullJob:
        job = agent.start_pull(ModelRef.parse("demo:v1"))
        await agent.ended(job, 10.0)
        return job

    job = asyncio.run(follow())
    assert job.state == "failed"
    assert job.error is not None and job.error.startswith(
        "internal error in the agent (AttributeError: 'Swarm' object has no attribute"
    )
    assert "pull again" in job.error
    assert "Traceback" in caplog.text and "pull of library/demo:v1 failed" in caplog.text


def test_a_second_agent_on_the_same_api_port_says_so(tmp_path: Path) -> None:
    """Issue 27, item 4: the second agent died with a 40-line traceback (uvicorn's
    SystemExit out of a task); now one line names the port and the fix."""
    api = free_port()
    first = subprocess.Popen(
        [
            *(str(SHOAL), "agent", "--models-dir", str(tmp_path / "a"), "--api-port", str(api)),
            *("--host", "127.0.0.1", "--no-lsd", "--mirror", "off"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(api, first, "shoal agent")
        second = subprocess.run(
            [
                *(str(SHOAL), "agent", "--models-dir", str(tmp_path / "b")),
                *("--api-port", str(api), "--host", "127.0.0.1", "--no-lsd", "--mirror", "off"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 5, second.stderr  # this host: the port is taken
        assert f"cannot serve the agent API on 127.0.0.1:{api}" in second.stderr
        assert "another --api-port" in second.stderr and "Traceback" not in second.stderr
        assert not (tmp_path / "b" / "agent.json").exists()
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
