"""``shoal sim run scenarios/smoke.toml`` end to end as root: namespaces, shaped links, real
processes, both systems measured; and after the runner is killed with SIGKILL, the next
run cleans what it left and runs; while one runs, a second run or `sim clean` is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from scenarios.netns import leftovers
from tests.conftest import SHOAL

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.toml"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def shoal_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SHOAL), "sim", *args], capture_output=True, text=True, timeout=300)


def sim(out: Path) -> subprocess.CompletedProcess[str]:
    return shoal_sim("run", str(SMOKE), "--out", str(out))


def check_result(out: Path) -> dict[str, object]:
    result = json.loads((out / "result.json").read_text())
    assert result["t_min_s"] > 0 and result["http_only_bound_s"] > result["t_min_s"]
    assert 0.9 < result["goodput_factor"] <= 1.0  # 100 Mbit/s tbf carries ~0.96 as payload
    for name in ("shoal", "http_only"):
        s = result["systems"][name]
        assert len(s["hosts"]) == 4 and all(h["done_s"] > 0 for h in s["hosts"])
        assert s["last_over_tmin"] >= 1.0  # nothing beats the bound
        assert s["origin_egress"], "the origin's egress was sampled over time"
    # HTTP only: every host's copy left the origin
    assert 3.9 < result["systems"]["http_only"]["origin_egress_over_f"] < 4.3
    assert result["systems"]["shoal"]["origin_egress_over_f"] < 2.0
    # where shoal's time went: its pulls report progress and bytes received twice; curl
    # reports neither, so the baseline has no breakdown
    shoal = result["systems"]["shoal"]
    assert all(h["progress"] and h["bytes_redundant"] is not None for h in shoal["hosts"])
    gap = shoal["breakdown"]
    last = max(h["done_s"] for h in shoal["hosts"])
    assert 0 <= gap["start_s"] < last and abs(gap["tail_s"]) < last  # 1 s samples: coarse here
    # about the bound's pace at best; the middle half of a 16 MiB pull is about a second,
    # read from half-second samples, so its slope is coarse (1.165 was seen once)
    assert 0 < gap["steady_over_bound"] <= 1.5
    assert gap["drain_s"] is not None and 0 <= gap["redundant_over_f"] < 1
    assert result["systems"]["http_only"]["breakdown"] is None
    assert (out / "progress.png").stat().st_size > 0
    return result


@needs_root
def test_smoke_runs_and_cleans_up(tmp_path: Path) -> None:
    r = sim(tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    check_result(tmp_path / "out")
    assert "shoal" in r.stdout and "http_only" in r.stdout
    assert "asking the agent" not in r.stderr  # each pull was started through its agent's API
    assert leftovers() == []


@needs_root
def test_a_killed_run_is_cleaned_by_the_next(tmp_path: Path) -> None:
    runner = subprocess.Popen(
        [str(SHOAL), "sim", "run", str(SMOKE), "--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while "shl-h4" not in leftovers():  # the fleet is up
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.1)
    time.sleep(2.0)  # its processes are running inside
    for second in (sim(tmp_path / "second"), shoal_sim("clean")):  # refused, nothing touched
        assert second.returncode != 0
        assert f"another simulated fleet is running on this machine (pid {runner.pid})" in (
            second.stderr
        )
        assert "Traceback" not in second.stderr
    assert "shl-h4" in leftovers() and runner.poll() is None
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    left = leftovers()
    assert "shl-sw" in left
    pids = subprocess.run(
        ["ip", "netns", "pids", "shl-origin"], capture_output=True, text=True
    ).stdout.split()
    r = sim(tmp_path / "again")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removed what an earlier run left" in r.stderr
    check_result(tmp_path / "again")
    assert leftovers() == []
    for pid in pids:  # what ran in the killed fleet is gone too
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


def test_a_bad_scenario_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\nhosts = 4\nmodel_size = "1M"\nhost_rate = "fast"\n')
    r = subprocess.run(
        [str(SHOAL), "sim", "run", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "invalid link rate 'fast'" in r.stderr
    assert "Traceback" not in r.stderr


@needs_root
def test_churn_applies_to_the_aria2c_baseline(tmp_path: Path) -> None:
    """A churned host's aria2c is SIGKILLed, started again on its directory, and ends."""
    scenario = tmp_path / "churn.toml"
    scenario.write_text(
        "[scenario]\n"
        'name = "churn-smoke"\nhosts = 3\nmodel_size = "32MiB"\n'
        'host_rate = "50mbit"\norigin_rate = "50mbit"\n'
        "churn_hosts = 1\nchurn_at_s = 2.0\nchurn_down_s = 2.0\n"
        'systems = ["aria2c"]\ntimeout_s = 120\n'
    )
    r = subprocess.run(
        [str(SHOAL), "sim", "run", str(scenario), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    run = json.loads((tmp_path / "out" / "result.json").read_text())["systems"]["aria2c"]
    events = dict((what, t) for t, what in run["events"])
    assert set(events) == {"1 hosts left", "1 hosts back"}
    churned = run["hosts"][-1]  # the last hosts are the ones that leave
    assert churned["name"] == "h3" and churned["done_s"] > events["1 hosts back"]
    assert all(h["done_s"] > 0 for h in run["hosts"])
    log = (tmp_path / "out" / "logs" / "aria2c-h3.log").read_bytes()
    assert log, "the churned host's aria2c ran"
    assert leftovers() == []
