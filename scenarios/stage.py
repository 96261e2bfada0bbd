"""The stage a simulation runs on: the fleet in network namespaces (coordinator, origin,
edges, hosts), its servers started and stopped, the faults a scenario injects (churn, a
killed origin) and the timeline that starts every host and samples the origin."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.demo import HostRun, model_files
from scenarios.netns import Fleet, Node, call_in, exec_argv, tx_payload, wait_port
from scenarios.procs import Processes
from scenarios.scenario import Scenario
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import RemoteError, ShoalError
from shoal.manifest import Manifest
from shoal.testing import write_model_dir

log = logging.getLogger("shoal.sim")
REF = "sim:latest"
PUBLISHER, FLEET_TOKEN, EDGE_TOKEN = "sim-publisher", "sim-fleet", "sim-edge"
COORD_PORT, ORIGIN_PORT, EDGE_PORT, BT_PORT, API_PORT = 8470, 8471, 8472, 6881, 8473
# In a fleet the coordinator, origin and edges are machines of their own; here they share
# 2 cores with every host. Scheduled ahead of the hosts' processes they keep their links
# busy as their own CPUs would (flash-8: the origin's link went from 92-95 % to 98-99 %
# busy). Every system of a run gets the same servers, so the comparison stays fair.
SERVER_NICE = -10


@dataclass
class SystemRun:
    name: str
    hosts: list[HostRun]
    egress: list[tuple[float, int]] = field(default_factory=list)  # (s, origin bytes)
    events: list[tuple[float, str]] = field(default_factory=list)  # faults injected
    origin_bytes: int = 0


class Stage:
    def __init__(self, sc: Scenario, out: Path, shoal: Path) -> None:
        self.sc = sc
        self.out = out
        self.work = out / "work"
        self.shoal = str(shoal)
        self.fleet = Fleet(sc.queue_ms, sc.tcp_congestion)
        self.procs = Processes(out / "logs")
        self.nodes: dict[str, Node] = {}
        self._origin: tuple[Path, bool] | None = None  # how the origin was started
        # churn: how the current system makes a host leave and come back
        self.on_leave: Callable[[Node], None] | None = None
        self.on_back: Callable[[Node], None] | None = None  # starts what left again
        self.on_ready: Callable[[Node], None] = lambda node: None  # waits until it serves
        self.away: dict[str, threading.Event] = {}  # churned host -> set once it is back

    # the fleet

    def build(self) -> None:
        sc = self.sc
        cleaned = self.fleet.create()
        if cleaned:
            log.warning("removed what an earlier run left: %s", ", ".join(cleaned))
        self.nodes["coord"] = self.fleet.add("coord")
        self.nodes["origin"] = self.fleet.add("origin", sc.origin_bps, sc.origin_bps)
        for i in range(sc.edges):
            self.nodes[f"edge{i + 1}"] = self.fleet.add(f"edge{i + 1}", sc.edge_bps, sc.edge_bps)
        for i in range(sc.hosts):
            rate = sc.host_rate(i)
            self.nodes[f"h{i + 1}"] = self.fleet.add(f"h{i + 1}", rate, rate)
        self.fleet.pin_neighbours()

    @property
    def hosts(self) -> list[Node]:
        return [self.nodes[f"h{i + 1}"] for i in range(self.sc.hosts)]

    @property
    def edges(self) -> list[Node]:
        return [self.nodes[f"edge{i + 1}"] for i in range(self.sc.edges)]

    def url(self, node: str, port: int) -> str:
        return f"http://{self.nodes[node].addr}:{port}"

    def start(
        self, node: str, name: str, argv: list[str], port: int | None, server: bool = True
    ) -> None:
        """Start a process in ``node``'s namespace; a server (not a host's agent) is
        scheduled ahead of the hosts (``SERVER_NICE``)."""
        n = self.nodes[node]

        def ready(proc: subprocess.Popen[bytes]) -> None:
            if port is not None:
                wait_port(n.ns, n.addr, port, proc)

        if server:
            argv = ["nice", "-n", str(SERVER_NICE), *argv]
        self.procs.start(name, exec_argv(n.ns, argv), ready=ready)

    def stop_all(self) -> None:
        self.procs.stop_all()

    # the model

    def publish(self) -> None:
        src = write_model_dir(self.work / "model", model_files(self.sc.model_size), seed=11)
        for kind, extra in (("hybrid", []), ("v1", ["--v1-only"])):
            subprocess.run(
                [
                    *(self.shoal, "publish", str(src), "--name", REF),
                    *("--out", str(self.work / f"published-{kind}"), *extra),
                    *("--web-seed", f"{self.url('origin', ORIGIN_PORT)}/webseed/"),
                    *("--tracker", f"{self.url('coord', COORD_PORT)}/announce"),
                ],
                check=True,
                capture_output=True,
            )

    def coordinator(self, published: Path | None) -> None:
        coord = self.nodes["coord"]
        self.start(
            "coord",
            "coordinator",
            [
                *(self.shoal, "tracker", "serve", "--host", coord.addr, "--port", str(COORD_PORT)),
                *("--db", str(self.work / f"coord-{time.monotonic_ns()}.sqlite")),
                *("--publish-token", PUBLISHER, "--fleet-token", FLEET_TOKEN),
                *("--edge-token", EDGE_TOKEN),
                *("--rate-limit", "0"),
            ],
            COORD_PORT,
        )
        if published is not None:  # the model in the registry, as `shoal publish` does
            manifest = Manifest.load((published / "manifest.msgpack").read_bytes())
            torrent = next(published.glob("*.torrent")).read_bytes()

            def register() -> None:
                with CoordinatorClient(self.url("coord", COORD_PORT), PUBLISHER) as cc:
                    cc.publish(manifest, torrent)

            call_in(coord.ns, register)

    def registration(self, token: str = EDGE_TOKEN) -> tuple[str, ...]:
        """Flags that point a server (an edge token) or an agent (the fleet token) at
        the coordinator, when the run has one."""
        if "coordinator" not in self.procs.running:
            return ()
        return ("--coordinator", self.url("coord", COORD_PORT), "--token", token)

    def origin(self, published: Path, bittorrent: bool) -> None:
        o = self.nodes["origin"]
        self._origin = (published, bittorrent)  # for a restart
        self.start(
            "origin",
            "origin",
            [
                *(self.shoal, "seed", str(published), "--host", o.addr, "--port", str(ORIGIN_PORT)),
                *("--public-url", self.url("origin", ORIGIN_PORT)),
                *(("--bt-listen", f"{o.addr}:{BT_PORT}") if bittorrent else ("--no-bittorrent",)),
                *self.registration(),
            ],
            ORIGIN_PORT,
        )

    def churn(self, run: SystemRun, hosts: list[Node], started: float) -> None:
        """``churn_hosts`` hosts leave at ``churn_at_s`` and come back ``churn_down_s`` later."""
        time.sleep(max(0.0, started + self.sc.churn_at_s - time.monotonic()))
        if self.on_leave is None or self.on_back is None:
            return
        for node in hosts:
            self.on_leave(node)
        run.events.append((round(time.monotonic() - started, 2), f"{len(hosts)} hosts left"))
        time.sleep(self.sc.churn_down_s)
        # all start again at once: one after another, each shoal agent waited for the one
        # before to serve (about 3 s each on the loaded cores), and the third came back
        # 14.5 s after leaving, not 5 s
        for node in hosts:
            self.on_back(node)
        for node in hosts:
            self.on_ready(node)
            self.away[node.name].set()
        run.events.append((round(time.monotonic() - started, 2), f"{len(hosts)} hosts back"))

    def fail_origin(self, run: SystemRun, started: float) -> None:
        """SIGKILL the origin; start it again ``origin_down_s`` later."""
        killed = self.procs.running["origin"]
        killed.kill()
        killed.wait()
        run.events.append((round(time.monotonic() - started, 2), "origin killed"))
        time.sleep(self.sc.origin_down_s)
        assert self._origin is not None
        self.origin(*self._origin)
        run.events.append((round(time.monotonic() - started, 2), "origin back"))

    def start_edges(self, published: Path) -> None:
        manifest = json.loads((published / "manifest.json").read_text())
        for e in self.edges:
            self.start(
                e.name,
                e.name,
                [
                    *(self.shoal, "edge", "serve", "--upstream", self.url("origin", ORIGIN_PORT)),
                    *("--host", e.addr, "--port", str(EDGE_PORT)),
                    # a cache of its own per system: the next system starts cold too
                    *("--cache-dir", str(self.work / f"cache-{e.name}-{time.monotonic_ns()}")),
                    *("--max-size", "8GiB"),
                    *("--public-url", self.url(e.name, EDGE_PORT)),
                    *self.registration(),
                ],
                EDGE_PORT,
            )
            if self.sc.warm_edges:  # fill the cache before the clock starts
                for f in manifest["files"]:
                    subprocess.run(
                        exec_argv(
                            e.ns,
                            [
                                *("curl", "-sf", "-o", "/dev/null"),
                                f"{self.url(e.name, EDGE_PORT)}/blobs/sha256:{f['sha256']}",
                            ],
                        ),
                        check=True,
                    )

    # measuring

    def origin_bytes(self) -> int:
        """Payload the origin's link carried out (HTTP and BitTorrent alike)."""
        return tx_payload(self.nodes["origin"].ns)

    def watch_egress(
        self, run: SystemRun, started: float, base: int, stop: threading.Event
    ) -> None:
        fault: threading.Thread | None = None
        kill_at = self.sc.kill_origin_at * self.sc.model_size
        while not stop.wait(0.5):
            sent = self.origin_bytes() - base
            run.egress.append((time.monotonic() - started, sent))
            if kill_at and fault is None and sent >= kill_at:
                fault = threading.Thread(target=self.fail_origin, args=(run, started))
                fault.start()
        if fault is not None:
            fault.join()
        run.origin_bytes = self.origin_bytes() - base
        # the last sample, at the end: in a run of a few seconds the one before it could
        # fall short of one copy, and the drain after that copy went unmeasured
        run.egress.append((time.monotonic() - started, run.origin_bytes))

    def timed(self, run: SystemRun, launch: Any) -> None:
        """Start every host's client on the timeline; wait for all, sampling the origin."""
        stop = threading.Event()
        base = self.origin_bytes()  # before any client asks
        started = time.monotonic()
        failed: list[BaseException] = []

        def sample() -> None:
            try:
                self.watch_egress(run, started, base, stop)
            except BaseException as exc:  # noqa: BLE001 - raised below, in the runner
                failed.append(exc)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        churned = self.hosts[self.sc.hosts - self.sc.churn_hosts :] if self.sc.churn_hosts else []
        self.away = {n.name: threading.Event() for n in churned}
        churn = threading.Thread(target=self.churn, args=(run, churned, started), daemon=True)
        if churned:
            churn.start()
        threads = []
        try:
            for i, (node, host) in enumerate(zip(self.hosts, run.hosts, strict=True)):
                delay = started + i * self.sc.stagger_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                threads.append(launch(node, host, started))
            for t in threads:
                t.join(max(0.0, started + self.sc.timeout_s - time.monotonic()))
            late = [h.name for h in run.hosts if h.done_s is None]
            if late:
                errors = "; ".join(f"{h.name}: {h.error}" for h in run.hosts if h.error)
                raise RemoteError(
                    f"{run.name}: {len(late)} hosts did not finish ({errors or 'timeout'})",
                    f"see {self.procs.logs}",
                )
        finally:
            stop.set()
            sampler.join()
        if failed:
            raise ShoalError(f"measuring the origin's egress failed: {failed[0]}")
