"""A token the coordinator refuses is a configuration error, said once (issue 27, 4):
it had been logged five times as "coordinator unavailable" while the pull went on from
peers and edges and exited 0, and ``shoal agent --token wrong`` started silently."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shoal.testing import free_port
from tests.conftest import SHOAL
from tests.peer.conftest import Fleet


def test_a_pull_with_a_refused_token_fails_at_once(fleet: Fleet, tmp_path: Path) -> None:
    proc = fleet.pull(
        "demo:v1",
        tmp_path / "m",
        *("--coordinator", fleet.coord_url, "--token", "wrong", "--edge", fleet.origin_url),
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert err.count("refused this host's token") == 1, err
    assert "coordinator unavailable" not in err and "Traceback" not in err
    assert not (tmp_path / "m" / "blobs").exists() or not any((tmp_path / "m" / "blobs").iterdir())


def test_an_agent_with_a_refused_token_does_not_start(fleet: Fleet, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(str(SHOAL), "agent", "--models-dir", str(tmp_path / "a")),
            *("--api-port", str(free_port()), "--host", "127.0.0.1", "--no-lsd", "--mirror", "off"),
            *("--coordinator", fleet.coord_url, "--token", "wrong"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "refused this host's token" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "a" / "agent.json").exists()


def test_a_coordinator_that_is_down_is_said_once(fleet: Fleet, tmp_path: Path) -> None:
    fleet.kill("coordinator")
    proc = fleet.pull(
        "demo:v1",
        tmp_path / "m",
        *("--coordinator", fleet.coord_url, "--token", "fleet", "--edge", fleet.origin_url),
    )
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err.count("coordinator unavailable (") <= 1, err


def test_an_unknown_model_through_the_agent_has_no_resume_hint(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Issue 27, item 4: the agent's answer for a name nobody published carried "`shoal
    pull` resumes what it verified", which has nothing to resume."""
    from tests.peer.test_agent import start_agent

    models = tmp_path / "a"
    agent, _, _ = start_agent(models, "--coordinator", fleet.coord_url, "--token", "fleet")
    try:
        done = subprocess.run(
            [str(SHOAL), "pull", "nope:1", "--models-dir", str(models)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        agent.terminate()
        agent.communicate(timeout=30)
    assert done.returncode != 0
    assert "not published here" in done.stderr, done.stderr
    assert "resumes" not in done.stderr and "GET /v1" not in done.stderr


def test_publishing_with_a_host_token_names_the_right_flag(fleet: Fleet, tmp_path: Path) -> None:
    src = tmp_path / "mine"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x" * 1000)
    done = subprocess.run(
        [
            *(str(SHOAL), "publish", str(src), "--name", "m:1", "--out", str(tmp_path / "o")),
            *("--coordinator", fleet.coord_url, "--token", "fleet"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "shoal publish --token-file" in done.stderr and "(--publish-token)" not in done.stderr
