"""The ``shoal`` command as a process: exit codes, signals, messages."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from shoal import __version__
from shoal.ref import ModelRef
from shoal.testing import write_blob
from tests.conftest import SHOAL, RunShoal


def test_version_and_help(run_shoal: RunShoal) -> None:
    r = run_shoal("version")
    assert r.returncode == 0 and r.stdout.strip() == f"shoal {__version__}"
    r = run_shoal("publish", "--help")
    assert r.returncode == 0 and "--web-seed" in r.stdout
    # brackets are text, not markup (rich printed "TOML config file ( table)")
    r = run_shoal("agent", "--help")
    assert "([agent] table)" in r.stdout and "[8473]" in r.stdout
    r = run_shoal("tracker", "serve", "--help")
    assert "[8470]" in r.stdout


def test_help_states_the_defaults_the_settings_have(run_shoal: RunShoal) -> None:
    """Each server's help names its real defaults (a newcomer reads them there)."""
    from seeder.edge_serve import EdgeSettings
    from tracker.settings import TrackerSettings

    def text(*cmd: str) -> str:
        # click wraps at 80 columns, after hyphens too ("[shoal-" / "tracker/...")
        out = run_shoal(*cmd, "--help").stdout
        return " ".join(re.sub(r"-\n\s+", "-", out).split())

    tracker = TrackerSettings()
    shown = text("tracker", "serve")
    for value in (tracker.db, tracker.announce_interval, f"{tracker.rate_limit:g}", tracker.port):
        assert f"[{value}]" in shown, value
    edge = EdgeSettings()
    shown = text("edge", "serve")
    for value in (edge.cache_dir, edge.max_size, edge.port, edge.upstream_fetches):
        assert f"[{value}]" in shown, value


def test_usage_error_exits_2(run_shoal: RunShoal) -> None:
    r = run_shoal("publish")
    assert r.returncode == 2 and "Missing argument" in r.stderr


def test_sigterm_mid_publish_cleans_up(tmp_path: Path) -> None:
    src = write_blob(tmp_path / "src" / "big.bin", 400 << 20, seed=2).parent
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            str(SHOAL),
            "publish",
            str(src),
            "--name",
            "m",
            "--out",
            str(out),
            "--chunk-size",
            "16KiB",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".out.partial-*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, "publish finished before the signal; use a larger file"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "terminated" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_bad_config_file(run_shoal: RunShoal, tmp_path: Path) -> None:
    cfg = tmp_path / "shoal.toml"
    cfg.write_text("[publish]\nhash_threads = 0\n")
    src = write_blob(tmp_path / "m" / "a", 10).parent
    r = run_shoal("publish", src, "--name", "m", "--config", cfg, "--out", tmp_path / "o")
    assert r.returncode == 2 and "hash_threads" in r.stderr
    cfg.write_text("[publish\n")
    r = run_shoal("publish", src, "--name", "m", "--config", cfg, "--out", tmp_path / "o")
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_tokens_from_files(run_shoal: RunShoal, tmp_path: Path) -> None:
    """Audit defect 8: a token given as a flag shows in ps; ``--token-file`` reads it from a
    file (first line), and a bad one is a clear error."""
    from shoal.testing import ServerThread
    from tracker.app import create_app
    from tracker.settings import TrackerSettings

    src = write_blob(tmp_path / "src" / "w.bin", 100_000, seed=4).parent
    token = tmp_path / "publish.token"
    token.write_text("secret-publisher\n")
    settings = TrackerSettings(db=tmp_path / "c" / "r.sqlite", publish_tokens=("secret-publisher",))
    with ServerThread(create_app(settings)) as coord:
        args = ["publish", str(src), "--name", "m:1", "--coordinator", coord.url]
        r = run_shoal(*args, "--out", str(tmp_path / "out"), "--token-file", str(token))
        assert r.returncode == 0 and "registered with" in r.stdout, r.stderr
        assert "secret-publisher" not in r.stdout + r.stderr
        token.write_text("\n")
        r = run_shoal(*args, "--out", str(tmp_path / "o2"), "--token-file", str(token))
        assert r.returncode == 2 and f"token file {token} is empty" in r.stderr
        r = run_shoal(*args, "--token", "x", "--token-file", str(token))
        assert r.returncode == 2 and "not both" in r.stderr


def test_ls_on_no_store_creates_nothing(run_shoal: RunShoal, tmp_path: Path) -> None:
    """Issue 27, item 5: listing an empty or missing store said nothing and created
    ``~/.shoal/...`` as a side effect."""
    where = tmp_path / "nowhere"
    r = run_shoal("ls", "--models-dir", str(where))
    assert r.returncode == 0 and r.stdout == "" and f"no models in {where}" in r.stderr
    assert not where.exists()


def test_ls_table(tmp_path: Path) -> None:
    from peer.store import Store
    from tests.peer.test_store import fill, published

    store = Store(tmp_path / "models").open()
    fill(store, published(tmp_path, "acme/tiny:1", {"w.bin": 3000}))
    store.pin(ModelRef.parse("acme/tiny:1"))
    out = subprocess.run(
        [str(SHOAL), "ls", "--models-dir", str(store.root)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.splitlines()
    assert out[0].split() == ["NAME", "ID", "SIZE", "LAST", "USED"]
    name, ident, *_, marks = out[1].split()
    assert name == "acme/tiny:1" and len(ident) == 12 and marks == "pinned"
    assert time.strftime("%Y-%m-%d") in out[1]
