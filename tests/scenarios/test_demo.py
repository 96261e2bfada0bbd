"""The README's first command, small: real processes on 127.0.0.1, every host verified,
the origin sending one copy, and nothing left running."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import SHOAL


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    r = subprocess.run(
        [str(SHOAL), "demo", "--hosts", "3", "--size", "12MiB", "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((work / "result.json").read_text())
    assert len(result["hosts"]) == 3
    for h in result["hosts"]:
        assert h["verified_bytes"] == 12 << 20 and h["bad_chunks"] == 0, h
        assert h["bytes_peer"] + h["bytes_edge"] + h["bytes_origin"] >= 12 << 20
    # the coordinator's assignments and edges-before-origins: one copy from the origin
    assert result["origin_egress_over_f"] <= 1.1, result
    assert result["origin_bt_bytes"] == 0  # the origin runs --no-bittorrent
    assert "copies of the model" in r.stdout and "Traceback" not in r.stderr
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(work) not in ps  # every process the demo started is gone
