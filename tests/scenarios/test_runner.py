"""How the runner starts a node's process (no namespaces needed: the process start is
recorded, not made)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenarios.netns import Node
from scenarios.runner import SERVER_NICE, Run
from scenarios.scenario import Scenario

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
