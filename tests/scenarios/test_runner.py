"""How the runner starts a node's process (no namespaces needed: the process start is
recorded, not made)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from scenarios.netns import Node
from scenarios.scenario import Scenario
from scenarios.stage import SERVER_NICE, SystemRun
from scenarios.stage import Stage as Run

ROOT = Path(__file__).resolve().parents[2]


def recording_run(tmp_path: Path) -> tuple[Run, list[list[str]]]:
    run = Run(Scenario.load(ROOT / "scenarios" / "smoke.toml"), tmp_path, Path("shoal"))
    started: list[list[str]] = []

    def start(name: str, argv: list[str], **_: Any) -> None:
        started.append(list(argv))

    run.procs.start = start  # type: ignore[method-assign]
    for name in ("origin", "h1"):
        run.nodes[name] = Node(name, f"shl-{name}", "198.18.0.9", None, None)
    return run, started


def test_servers_are_scheduled_ahead_of_the_hosts(tmp_path: Path) -> None:
    run, started = recording_run(tmp_path)
    run.start("origin", "origin", ["shoal", "seed", "x"], None)
    run.start("h1", "agent-h1", ["shoal", "agent"], None, server=False)
    assert SERVER_NICE < 0
    assert started[0] == [
        *("ip", "netns", "exec", "shl-origin", "nice", "-n", str(SERVER_NICE)),
        *("shoal", "seed", "x"),
    ]
    assert started[1] == ["ip", "netns", "exec", "shl-h1", "shoal", "agent"]


def test_churned_hosts_come_back_together(tmp_path: Path) -> None:
    """Every host that left is started again before the runner waits for any to serve:
    waited for one by one, the third shoal agent came back 14.5 s after leaving, not 5 s."""
    sc = dataclasses.replace(
        Scenario.load(ROOT / "scenarios" / "smoke.toml"),
        churn_hosts=3,
        churn_at_s=0.0,
        churn_down_s=0.0,
    )
    run = Run(sc, tmp_path, Path("shoal"))
    hosts = [Node(f"h{i}", f"shl-h{i}", "198.18.0.9", None, None) for i in (2, 3, 4)]
    run.away = {h.name: threading.Event() for h in hosts}
    calls: list[tuple[str, str]] = []
    run.on_leave = lambda h: calls.append(("leave", h.name))
    run.on_back = lambda h: calls.append(("back", h.name))
    run.on_ready = lambda h: calls.append(("ready", h.name))
    system = SystemRun("shoal", [])
    run.churn(system, hosts, time.monotonic())
    assert [c for c, _ in calls] == ["leave"] * 3 + ["back"] * 3 + ["ready"] * 3
    assert all(run.away[h.name].is_set() for h in hosts)
    assert [e for _, e in system.events] == ["3 hosts left", "3 hosts back"]
