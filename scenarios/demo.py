"""The local demo (README's first command, no root): a coordinator, an origin, an edge and
N agents on 127.0.0.1, a generated model published once and pulled by every agent at the
same time with live progress, then a summary: time per host, bytes by source, what the
origin sent against one copy, and every host's store re-hashed through its agent.

Pulls are started with ``shoal pull --json`` on each agent's models dir, so they go through
the agents exactly as an operator's would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scenarios.procs import Processes
from shoal.errors import RemoteError, ShoalError
from shoal.testing import free_port, write_model_dir
from shoal.units import format_size

REF = "demo:latest"
PUBLISHER, FLEET, EDGE = "demo-publisher", "demo-fleet", "demo-edge"


@dataclass(frozen=True)
class DemoOptions:
    work: Path
    hosts: int = 4
    size: int = 256 << 20
    timeout: float = 300.0


@dataclass
class HostRun:
    name: str
    models: Path
    held: int = 0
    total: int = 0
    peer: int = 0
    edge: int = 0
    origin: int = 0  # HTTP bytes from the origin
    redundant: int | None = None  # peer bytes received twice (shoal reports it)
    done_s: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    verified: dict[str, Any] | None = None
    lines: list[str] = field(default_factory=list)
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s, verified bytes)

    def account(self, is_edge: Callable[[str], bool], origin: str) -> None:
        """Bytes by source from the finished pull's summary (per-upstream HTTP figures)."""
        assert self.result is not None
        by_url = {e["url"]: int(e["bytes"]) for e in self.result["edges"]}
        self.peer = int(self.result["bytes_peer"])
        self.redundant = int(self.result["bytes_redundant"])
        self.edge = sum(b for u, b in by_url.items() if is_edge(u))
        self.origin = by_url.get(origin, 0)

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "done_s": round(self.done_s or 0.0, 3),
            "bytes_peer": self.peer,
            "bytes_edge": self.edge,
            "bytes_origin": self.origin,
            "bytes_redundant": self.redundant,
            "progress": [[round(t, 2), b] for t, b in self.progress],
        }


def model_files(size: int) -> dict[str, int]:
    """A model shaped like a real one: one large weights file and two small ones."""
    small = {"config.json": 1_234, "tokenizer.json": 2_000_000}
    return {"model.gguf": max(1, size - sum(small.values())), **small}


def origin_egress(url: str) -> tuple[int, int]:
    """(HTTP body bytes, BitTorrent payload bytes) the origin sent."""
    http = bt = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("shoal_origin_bytes_served_total"):
            http += float(line.rsplit(" ", 1)[1])
        elif line.startswith("shoal_origin_bt_upload_bytes "):
            bt += float(line.rsplit(" ", 1)[1])
    return int(http), int(bt)


def follow(host: HostRun, proc: subprocess.Popen[str], started: float) -> None:
    """Read one ``shoal pull --json`` to its end."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        try:
            line = json.loads(raw)
        except ValueError:
            host.lines.append(raw)
            continue
        now = time.monotonic() - started
        if line.get("event") == "progress":
            host.held, host.total = int(line["bytes"]), int(line["total"])
            host.peer, host.edge = int(line["bytes_peer"]), int(line["bytes_edge"])
        elif line.get("event") == "done":
            host.done_s = now
            host.result = line
            host.held = host.total = int(line["bytes"])
        else:
            continue
        host.progress.append((now, host.held))
    if proc.wait() != 0 and host.result is None:
        err = proc.stderr.read() if proc.stderr else ""
        lines = [line.strip() for line in err.strip().splitlines()]
        host.error = " / ".join(lines) if lines else f"exit {proc.returncode}"


class Demo:
    def __init__(self, opts: DemoOptions, shoal: Path) -> None:
        self.opts = opts
        self.shoal = str(shoal)
        self.procs = Processes(opts.work / "logs")
        self.hosts = [
            HostRun(f"host{i + 1}", opts.work / "hosts" / f"host{i + 1}") for i in range(opts.hosts)
        ]
        self.coord = self.origin = self.edge = ""

    def start(self) -> None:
        work, sh = self.opts.work, self.shoal
        src = write_model_dir(work / "model", model_files(self.opts.size), seed=7)
        cport, oport, eport = free_port(), free_port(), free_port()
        self.coord = f"http://127.0.0.1:{cport}"
        self.origin = f"http://127.0.0.1:{oport}"
        self.edge = f"http://127.0.0.1:{eport}"
        self.procs.start(
            "coordinator",
            [
                *(sh, "tracker", "serve", "--host", "127.0.0.1", "--port", str(cport)),
                *("--db", str(work / "coordinator.sqlite"), "--publish-token", PUBLISHER),
                *("--fleet-token", FLEET, "--edge-token", EDGE, "--rate-limit", "0"),
            ],
            port=cport,
        )
        published = work / "published"
        subprocess.run(
            [
                *(sh, "publish", str(src), "--name", REF, "--out", str(published)),
                *("--coordinator", self.coord, "--token", PUBLISHER),
            ],
            check=True,
            capture_output=True,
        )
        fleet = ("--coordinator", self.coord, "--token", FLEET)
        server = ("--coordinator", self.coord, "--token", EDGE)
        self.procs.start(
            "origin",
            [
                *(sh, "seed", str(published), "--host", "127.0.0.1", "--port", str(oport)),
                *("--no-bittorrent", "--public-url", self.origin),
                *server,
            ],
            port=oport,
        )
        self.procs.start(
            "edge",
            [
                *(sh, "edge", "serve", "--upstream", self.origin, "--host", "127.0.0.1"),
                *("--port", str(eport), "--cache-dir", str(work / "edge-cache")),
                *("--max-size", "2GiB", "--public-url", self.edge, *server),
            ],
            port=eport,
        )
        for h in self.hosts:
            api = free_port()
            self.procs.start(
                h.name,
                [
                    *(sh, "agent", "--models-dir", str(h.models), "--api-port", str(api)),
                    *(
                        "--host",
                        "127.0.0.1",
                        "--no-lsd",
                        "--mirror",
                        "off",
                        "--min-free",
                        "0",
                        *fleet,
                    ),
                ],
                port=api,
            )
        deadline = time.monotonic() + 30
        while not all((h.models / "agent.json").exists() for h in self.hosts):
            if time.monotonic() > deadline:
                raise ShoalError("the agents did not come up", f"see {self.procs.logs}")
            time.sleep(0.05)

    def pull_all(self, show: Any) -> float:
        """Every host pulls at once; ``show(hosts)`` is called while they run. Returns the
        wall time of the whole fleet."""
        started = time.monotonic()
        threads = []
        for h in self.hosts:
            proc = subprocess.Popen(
                [self.shoal, "pull", REF, "--models-dir", str(h.models), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            t = threading.Thread(target=follow, args=(h, proc, started), daemon=True)
            t.start()
            threads.append(t)
        while any(t.is_alive() for t in threads):
            if time.monotonic() - started > self.opts.timeout:
                raise RemoteError(
                    f"the pulls did not finish in {self.opts.timeout:.0f} s",
                    f"see the agents' logs in {self.procs.logs}",
                )
            show(self.hosts)
            time.sleep(0.2)
        show(self.hosts)
        failed = [h for h in self.hosts if h.result is None]
        if failed:
            raise RemoteError(
                "; ".join(f"{h.name}: {h.error}" for h in failed),
                f"see the agents' logs in {self.procs.logs}",
            )
        return time.monotonic() - started

    def verify_all(self) -> None:
        """Each agent re-hashes every chunk of its store (``shoal verify`` delegates)."""
        for h in self.hosts:
            r = subprocess.run(
                [self.shoal, "verify", "--models-dir", str(h.models), "--json"],
                capture_output=True,
                text=True,
            )
            h.verified = json.loads(r.stdout) if r.stdout.strip() else {"bad": ["?"]}

    def report(self, wall: float) -> dict[str, Any]:
        http, bt = origin_egress(self.origin)
        rows = []
        for h in self.hosts:
            h.account(lambda url: url == self.edge, self.origin)
            rows.append(
                {
                    **h.row(),
                    "verified_bytes": int(h.verified["bytes"]) if h.verified else 0,
                    "bad_chunks": sum(len(b["chunks"]) for b in (h.verified or {}).get("bad", [])),
                }
            )
        return {
            "model_bytes": self.opts.size,
            "hosts": rows,
            "wall_s": round(wall, 2),
            "origin_http_bytes": http,
            "origin_bt_bytes": bt,
            "origin_egress_over_f": round((http + bt) / self.opts.size, 3),
        }

    def stop(self) -> None:
        self.procs.stop_all()


def run(opts: DemoOptions, shoal: Path | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console()
    if opts.work.exists():
        shutil.rmtree(opts.work)
    demo = Demo(opts, shoal or Path(sys.executable).parent / "shoal")
    try:
        console.print(
            f"starting a coordinator, an origin, an edge and {opts.hosts} agents on 127.0.0.1 "
            f"(logs in {demo.procs.logs})"
        )
        demo.start()
        console.print(f"published {REF} ({format_size(opts.size)}); every agent pulls it at once")

        def progress_table(hosts: list[HostRun]) -> Table:
            t = Table(box=None, pad_edge=False)
            for col in ("host", "progress", "from peers", "from edges", "done"):
                t.add_column(col, justify="right" if col != "host" else "left")
            for h in hosts:
                frac = h.held / h.total if h.total else 0.0
                bar = "█" * int(frac * 30) + "·" * (30 - int(frac * 30))
                t.add_row(
                    h.name,
                    f"{bar} {frac * 100:5.1f}%",
                    format_size(h.peer),
                    format_size(h.edge),
                    f"{h.done_s:.1f} s" if h.done_s is not None else "",
                )
            return t

        with Live(progress_table(demo.hosts), console=console, refresh_per_second=5) as live:
            wall = demo.pull_all(lambda hosts: live.update(progress_table(hosts)))
        demo.verify_all()
        result = demo.report(wall)
    finally:
        demo.stop()
    (opts.work / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    _summary(console, result)
    return result


def _summary(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    size = r["model_bytes"]
    console.print()
    t = Table(title=f"{len(r['hosts'])} hosts pulled {format_size(size)}")
    for col in ("host", "time", "from peers", "from the edge", "from the origin", "verified"):
        t.add_column(col, justify="left" if col == "host" else "right")
    for h in r["hosts"]:
        t.add_row(
            h["name"],
            f"{h['done_s']:.1f} s",
            format_size(h["bytes_peer"]),
            format_size(h["bytes_edge"]),
            format_size(h["bytes_origin"]),
            "all chunks" if not h["bad_chunks"] and h["verified_bytes"] == size else "FAILED",
        )
    console.print(t)
    total = r["origin_http_bytes"] + r["origin_bt_bytes"]
    console.print(
        f"the origin sent {format_size(total)} = {r['origin_egress_over_f']:.2f} copies of the "
        f"model (HTTP {format_size(r['origin_http_bytes'])}, BitTorrent "
        f"{format_size(r['origin_bt_bytes'])}); without shoal every host would fetch its own "
        f"copy: {len(r['hosts'])} copies"
    )
    console.print(f"whole fleet done in {r['wall_s']:.1f} s; figures in result.json")
