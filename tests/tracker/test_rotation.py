"""Issue 31, item 4: tokens rotated without a restart, and never written to a log. A real
coordinator reads its tokens file again when it changes (and on SIGHUP): during a
rotation the old and the new token both work, after it only the new one; a file that
does not parse leaves the tokens in force. Registry writes are audited by role, never by
token. A whole fleet (coordinator, origin, agent, pulls, publishes) runs with random
tokens, and no log line, answer to /metrics or audit entry holds one."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from shoal.coordinator_client import CoordinatorClient
from shoal.errors import AuthError
from shoal.testing import free_port, stop_processes, wait_listening, write_model_dir
from tests.conftest import SHOAL
from tests.tracker.conftest import make_published


def tokens_file(path: Path, publishers: list[str], fleet: list[str], edges: list[str]) -> None:
    """The coordinator's tokens file, replaced in one rename (TOML arrays of strings)."""
    lists = {"publishers": publishers, "fleet": fleet, "edges": edges}
    text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in lists.items())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def until(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def publishes(url: str, token: str, tmp: Path) -> bool:
    pub = make_published(tmp / secrets.token_hex(4), seed=3)
    try:
        with CoordinatorClient(url, token) as c:
            c.publish(pub.manifest, pub.torrent_path.read_bytes())
        return True
    except AuthError:
        return False


def test_tokens_rotate_without_a_restart_and_writes_are_audited(tmp_path: Path) -> None:
    old, new, fleet = (secrets.token_urlsafe(24) for _ in range(3))
    path = tmp_path / "tokens.toml"
    tokens_file(path, [old], [fleet], [])
    port = free_port()
    log = (tmp_path / "coordinator.log").open("w")
    proc = subprocess.Popen(
        [
            *(str(SHOAL), "tracker", "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--db", str(tmp_path / "coord.sqlite"), "--tokens-file", str(path)),
            *("--rate-limit", "0"),
        ],
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(port, proc, "shoal tracker serve")
        assert publishes(url, old, tmp_path)
        assert not publishes(url, new, tmp_path)
        tokens_file(path, [old, new], [fleet], [])  # the window: both
        until(lambda: publishes(url, new, tmp_path), "the new token was not taken")
        assert publishes(url, old, tmp_path)
        tokens_file(path, [new], [fleet], [])  # the old one removed
        until(lambda: not publishes(url, old, tmp_path), "the old token still works")
        assert publishes(url, new, tmp_path)
        path.write_text("publishers = [this is not toml")  # a bad file: the tokens stand
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(1.5)
        assert publishes(url, new, tmp_path) and not publishes(url, old, tmp_path)
        assert proc.poll() is None  # no restart, all along
        audit = httpx.get(
            f"{url}/v1/audit",
            headers={"Authorization": f"Bearer {new}", "Accept": "application/json"},
            timeout=10,
        ).json()["audit"]
        who = [(e["who"], e["action"]) for e in reversed(audit)]
        # publisher:0 was the old token, then publisher:1 (in the window), then publisher:0
        assert who[:2] == [("publisher:0", "publish"), ("publisher:1", "publish")], who
        assert all(e["digest"].startswith("sha256:") for e in audit)
        refused = httpx.get(f"{url}/v1/audit", headers={"Authorization": f"Bearer {old}"})
        assert refused.status_code == 403
    finally:
        stop_processes([proc])
        log.close()
    text = (tmp_path / "coordinator.log").read_text()
    assert "tokens reloaded" in text and "tokens file not reloaded" in text
    for token in (old, new, fleet):
        assert token not in text


def test_no_token_reaches_a_log_or_an_answer(tmp_path: Path) -> None:
    """Coordinator, origin and agent with random tokens, a publish and pulls (one that
    fails with a wrong token): every process's output, /metrics and the audit, grepped."""
    publisher, fleet, edge, wrong = (secrets.token_urlsafe(24) for _ in range(4))
    path = tmp_path / "tokens.toml"
    tokens_file(path, [publisher], [fleet], [edge])
    logs: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *argv: str) -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"{name}.log")
        out = logs[-1].open("w")
        procs.append(subprocess.Popen([str(SHOAL), *argv], stdout=out, stderr=out))
        return procs[-1]

    def token_file(token: str) -> str:
        p = tmp_path / f"{secrets.token_hex(4)}.token"
        p.write_text(token + "\n")
        return str(p)

    coord, origin, api, bt = free_port(), free_port(), free_port(), free_port()
    coord_url = f"http://127.0.0.1:{coord}"
    try:
        wait_listening(
            coord,
            start(
                "coordinator",
                *("tracker", "serve", "--host", "127.0.0.1", "--port", str(coord)),
                *("--db", str(tmp_path / "c.sqlite"), "--tokens-file", str(path)),
            ),
        )
        src = write_model_dir(tmp_path / "src", {"w.bin": 2_000_000, "c.json": 50}, seed=2)
        run = subprocess.run(
            [
                *(str(SHOAL), "publish", str(src), "--name", "demo:v1"),
                *("--out", str(tmp_path / "pub"), "--coordinator", coord_url),
                *("--token-file", token_file(publisher)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        (tmp_path / "publish.log").write_text(run.stdout + run.stderr)
        logs.append(tmp_path / "publish.log")
        wait_listening(
            origin,
            start(
                "origin",
                *("seed", str(tmp_path / "pub"), "--host", "127.0.0.1", "--port", str(origin)),
                *("--bt-listen", f"127.0.0.1:{bt}", "--coordinator", coord_url),
                *("--token-file", token_file(edge)),
            ),
        )
        wait_listening(
            api,
            start(
                "agent",
                *("agent", "--models-dir", str(tmp_path / "host"), "--api-port", str(api)),
                *("--host", "127.0.0.1", "--mirror", "off", "--coordinator", coord_url),
                *("--token-file", token_file(fleet)),
            ),
        )
        for name, token in (("pull", fleet), ("wrong", wrong)):
            done = subprocess.run(
                [
                    *(str(SHOAL), "pull", "demo:v1", "--models-dir", str(tmp_path / name)),
                    *("--coordinator", coord_url, "--token-file", token_file(token)),
                    *("--host", "127.0.0.1"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert (done.returncode == 0) == (name == "pull"), done.stderr
            (tmp_path / f"{name}.log").write_text(done.stdout + done.stderr)
            logs.append(tmp_path / f"{name}.log")
        answers = [
            httpx.get(f"{coord_url}/metrics", timeout=10).text,
            httpx.get(f"http://127.0.0.1:{origin}/metrics", timeout=10).text,
            httpx.get(
                f"{coord_url}/v1/audit",
                headers={"Authorization": f"Bearer {publisher}", "Accept": "application/json"},
            ).text,
        ]
    finally:
        stop_processes(procs)
    texts = [p.read_text() for p in logs] + answers
    assert sum(len(t) for t in texts) > 1000  # there was something to look at
    for token in (publisher, fleet, edge, wrong):
        places = [*map(str, logs), "coordinator /metrics", "origin /metrics", "audit"]
        for where, text in zip(places, texts, strict=True):
            assert token not in text, f"a token in {where}"
