"""``shoal sim run SCENARIO.toml``: build the fleet in network namespaces, run each system
(shoal, HTTP only, aria2c) on it in turn, measure per host and at the origin, compare with
the fluid bound, write ``result.json`` and plots, and always tear everything down."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peer.agent.client import find_agent, pull_via_agent
from peer.progress import Snapshot
from scenarios.bound import Links, breakdown, figures, http_only_bound, t_min
from scenarios.demo import HostRun, model_files
from scenarios.netns import Fleet, Node, call_in, exec_argv, tx_payload, wait_port
from scenarios.plots import write_plots
from scenarios.procs import Processes
from scenarios.scenario import Scenario
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import RemoteError, ShoalError
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from shoal.testing import stop_processes, write_model_dir

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


class Run:
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
        self._leave: Callable[[Node], None] | None = None
        self._back: Callable[[Node], None] | None = None  # starts what left again
        self._ready: Callable[[Node], None] = lambda node: None  # waits until it serves
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
        if self._leave is None or self._back is None:
            return
        for node in hosts:
            self._leave(node)
        run.events.append((round(time.monotonic() - started, 2), f"{len(hosts)} hosts left"))
        time.sleep(self.sc.churn_down_s)
        # all start again at once: one after another, each shoal agent waited for the one
        # before to serve (about 3 s each on the loaded cores), and the third came back
        # 14.5 s after leaving, not 5 s
        for node in hosts:
            self._back(node)
        for node in hosts:
            self._ready(node)
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

    # the systems

    def run_shoal(self) -> SystemRun:
        published = self.work / "published-hybrid"
        if self.sc.coordinator:
            self.coordinator(published)
        self.origin(published, bittorrent=False)
        self.start_edges(published)
        if self.sc.coordinator:
            fleet: tuple[str, ...] = (*self.registration(FLEET_TOKEN), "--no-lsd")
        else:  # a LAN: peers by LSD, the model and HTTP chunks from the edges and origin
            servers = [self.url(e.name, EDGE_PORT) for e in self.edges]
            servers.append(self.url("origin", ORIGIN_PORT))
            fleet = ("--lsd", *(arg for url in servers for arg in ("--edge", url)))
        runs = {h.name: HostRun(h.name, self.work / "shoal" / h.name) for h in self.hosts}

        def agent(h: Node) -> None:
            models = runs[h.name].models
            (models / "agent.json").unlink(missing_ok=True)  # a killed agent's
            self.start(
                h.name,
                f"agent-{h.name}",
                [
                    *(self.shoal, "agent", "--models-dir", str(models)),
                    *("--host", h.addr, "--port", str(BT_PORT), "--api-port", str(API_PORT)),
                    *("--min-free", "0", *fleet),
                ],
                None,
                server=False,
            )

        def serving(h: Node) -> None:
            wait_port(h.ns, "127.0.0.1", API_PORT)
            deadline = time.monotonic() + 20
            while not (runs[h.name].models / "agent.json").exists():
                if time.monotonic() > deadline:
                    raise ShoalError(f"the agent of {h.name} did not come up")
                time.sleep(0.05)

        def leave(h: Node) -> None:
            proc = self.procs.running[f"agent-{h.name}"]
            proc.kill()
            proc.wait()

        for h in self.hosts:
            agent(h)
        for h in self.hosts:
            serving(h)
        self._leave, self._back, self._ready = leave, agent, serving
        run = SystemRun("shoal", list(runs.values()))
        # what `shoal pull` does before it asks (read agent.json, check the agent answers)
        # is done now, not on the clock: 32 of those at once took 0.4-0.5 s of flash-32's
        # start, a cost of this runner's threads, not of the pull. A pull after its agent
        # came back (churn) looks for it again
        found: dict[str, tuple[str, str] | None] = {
            h.name: call_in(h.ns, functools.partial(find_agent, runs[h.name].models))
            for h in self.hosts
        }

        def pull(node: Node, host: HostRun, started: float) -> None:
            """What ``shoal pull`` does on a host with an agent: ask the agent for the pull,
            then follow it (each status request waits for the end, so it is seen at once),
            here from a thread in the host's namespace. 32 Python CLIs starting at once took
            about 15 s of the 2 cores in flash-32, which a fleet, each host on its own CPU,
            does not pay; the CLI's agent path is tested on its own (tests/peer)."""

            def follow_agent() -> dict[str, Any]:
                agent = found.pop(node.name, None) or find_agent(host.models)
                if agent is None:
                    raise RemoteError(f"the agent of {node.name} is not answering")
                return pull_via_agent(*agent, ModelRef.parse(REF), progress, poll=0.5)

            def progress(s: Snapshot) -> None:
                host.progress.append((time.monotonic() - started, s.held))

            host.error = None
            try:
                host.result = call_in(node.ns, follow_agent)
            except ShoalError as exc:
                host.error = exc.message
                return
            host.done_s = time.monotonic() - started
            host.progress.append((host.done_s, int(host.result["bytes"])))

        def launch(node: Node, host: HostRun, started: float) -> threading.Thread:
            def body() -> None:
                for _ in range(4):  # again after its agent was killed and came back
                    pull(node, host, started)
                    back_again = self.away.get(node.name)
                    if host.result is not None or back_again is None:
                        return
                    back_again.wait(self.sc.timeout_s)

            t = threading.Thread(target=body, daemon=True)
            t.start()
            return t

        self.timed(run, launch)
        origin = self.url("origin", ORIGIN_PORT)
        for host in run.hosts:
            host.account(lambda url: url.endswith(f":{EDGE_PORT}"), origin)
        return run

    def run_http_only(self) -> SystemRun:
        published = self.work / "published-hybrid"
        self.coordinator(None)
        self.origin(published, bittorrent=False)
        self.start_edges(published)
        manifest = json.loads((published / "manifest.json").read_text())
        sources = [self.url(e.name, EDGE_PORT) for e in self.edges] or [
            self.url("origin", ORIGIN_PORT)
        ]
        run = SystemRun(
            "http_only", [HostRun(h.name, self.work / "http" / h.name) for h in self.hosts]
        )
        current: dict[str, subprocess.Popen[str]] = {}

        def leave(h: Node) -> None:
            proc = current.get(h.name)
            if proc is not None and proc.poll() is None:
                proc.kill()

        self._leave, self._back, self._ready = leave, lambda h: None, lambda h: None

        def launch(node: Node, host: HostRun, started: float) -> threading.Thread:
            index = int(node.name[1:]) - 1
            base = sources[index % len(sources)]  # hosts spread over the edges

            def body() -> None:
                host.models.mkdir(parents=True, exist_ok=True)
                for f in manifest["files"]:
                    for _ in range(4):  # again, resuming, after the host came back
                        proc = subprocess.Popen(
                            exec_argv(
                                node.ns,
                                [
                                    *("curl", "-sf", "-o", str(host.models / f["sha256"])),
                                    # as an operator would: retry and resume through faults
                                    *("--retry", "30", "--retry-delay", "1"),
                                    *("--retry-all-errors", "-C", "-"),
                                    f"{base}/blobs/sha256:{f['sha256']}",
                                ],
                            ),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            text=True,
                        )
                        current[node.name] = proc
                        if proc.wait() == 0:
                            break
                        returned = self.away.get(node.name)
                        if returned is None:
                            host.error = f"curl exit {proc.returncode}"
                            return
                        returned.wait(self.sc.timeout_s)
                    else:
                        host.error = "curl failed after the host came back"
                        return
                host.done_s = time.monotonic() - started
                if self.edges:
                    host.edge = self.sc.model_size
                else:
                    host.origin = self.sc.model_size

            t = threading.Thread(target=body, daemon=True)
            t.start()
            return t

        self.timed(run, launch)
        return run

    def run_aria2c(self) -> SystemRun:
        """A swarm of Debian's aria2c on the v1 torrent (aria2 reads no v2), with the
        coordinator as tracker, the origin seeding and serving the web seed. Each client
        seeds on until every host is done; its completion time comes from aria2c's own
        download-complete hook. A host that leaves (churn) has its aria2c SIGKILLed; back,
        it starts aria2c again on the same directory, as an operator would: progress saved
        every second, existing data checked (``-V``) and kept."""
        published = self.work / "published-v1"
        self.coordinator(published)
        self.origin(published, bittorrent=True)
        torrent = next(published.glob("*.torrent"))
        run = SystemRun(
            "aria2c", [HostRun(h.name, self.work / "aria2c" / h.name) for h in self.hosts]
        )
        hook = self.work / "aria2c-done.sh"
        hook.write_text('#!/bin/sh\ndate +%s.%N > "$ARIA2_DONE"\n')
        hook.chmod(0o755)
        clients: list[subprocess.Popen[bytes]] = []
        current: dict[str, subprocess.Popen[bytes]] = {}
        dirs = {h.name: host.models for h, host in zip(self.hosts, run.hosts, strict=True)}

        def start(node: Node) -> None:
            models = dirs[node.name]
            models.mkdir(parents=True, exist_ok=True)
            log = (self.procs.logs / f"aria2c-{node.name}.log").open("ab")
            proc = subprocess.Popen(
                exec_argv(
                    node.ns,
                    [
                        *("aria2c", f"--dir={models}", "--enable-dht=false"),
                        *("--enable-dht6=false", "--bt-enable-lpd=false"),
                        *("--seed-time=3600", "--seed-ratio=0.0", f"--listen-port={BT_PORT}"),
                        *("--summary-interval=0", "--console-log-level=warn"),
                        *("--file-allocation=none", "--follow-torrent=false"),
                        *("--auto-save-interval=1", "--check-integrity=true"),
                        f"--on-bt-download-complete={hook}",
                        str(torrent),
                    ],
                ),
                stdout=log,
                stderr=log,
                env={**os.environ, "ARIA2_DONE": str(models / "done-at")},
            )
            clients.append(proc)
            current[node.name] = proc

        def leave(node: Node) -> None:
            proc = current.get(node.name)
            if proc is not None and proc.poll() is None:
                proc.kill()

        self._leave, self._back, self._ready = leave, start, lambda h: None

        def launch(node: Node, host: HostRun, started: float) -> threading.Thread:
            marker = host.models / "done-at"
            epoch = time.time() - (time.monotonic() - started)  # the run's start, wall clock
            start(node)

            def body() -> None:
                while True:
                    proc = current[node.name]
                    while proc.poll() is None:
                        if marker.exists() and marker.read_text().strip():
                            host.done_s = float(marker.read_text()) - epoch
                            return
                        time.sleep(0.1)
                    returned = self.away.get(node.name)
                    if returned is None or (returned.is_set() and current[node.name] is proc):
                        host.error = f"aria2c exit {proc.returncode}"
                        return
                    returned.wait(self.sc.timeout_s)  # churned: its next aria2c goes on

            t = threading.Thread(target=body, daemon=True)
            t.start()
            return t

        try:
            self.timed(run, launch)
        finally:
            stop_processes(clients)
        return run

    def run_system(self, name: str) -> SystemRun:
        try:
            systems = {
                "shoal": self.run_shoal,
                "http_only": self.run_http_only,
                "aria2c": self.run_aria2c,
            }
            return systems[name]()
        finally:
            self._leave = self._back = None
            self.stop_all()


def _system_figures(sc: Scenario, links: Links, run: SystemRun) -> dict[str, Any]:
    done = [h.done_s or 0.0 for h in run.hosts]
    f = figures(sc.model_size, links, done, run.origin_bytes)
    gap = breakdown(
        sc.model_size,
        t_min(sc.model_size, links),
        [h.progress for h in run.hosts],
        done,
        run.egress,
        [h.redundant for h in run.hosts],
    )
    return {
        **{k: round(v, 3) for k, v in asdict(f).items()},
        "breakdown": None
        if gap is None
        else {k: v if v is None else round(v, 3) for k, v in asdict(gap).items()},
        "hosts": [h.row() for h in run.hosts],
        "origin_egress": [[round(t, 2), b] for t, b in run.egress],
        "events": [[t, what] for t, what in run.events],
    }


def calibrate(run: Run, flows: int = 2) -> float:
    """Measured single-flow goodput over nominal rate: the best of ``flows`` curls from the
    origin to the first host, about 2.5 s each (one Reno flow varied from 0.936 to 0.958 of
    nominal at 100 Mbit/s; a low one let plain HTTP beat its own bound)."""
    published = run.work / "published-hybrid"
    run.origin(published, bittorrent=False)
    try:
        manifest = json.loads((published / "manifest.json").read_text())
        big = max(manifest["files"], key=lambda f: f["size"])
        url = f"{run.url('origin', ORIGIN_PORT)}/blobs/sha256:{big['sha256']}"
        nominal = min(run.sc.origin_bps, run.sc.host_rate(0)) / 8
        return min(1.0, max(_goodput(run.hosts[0], url) for _ in range(flows)) / nominal)
    finally:
        run.stop_all()


def _goodput(host: Node, url: str) -> float:
    """Bytes/s of one curl of ``url`` from ``host``, cut after 2.5 s."""
    r = subprocess.run(
        exec_argv(
            host.ns,
            [
                *("curl", "-s", "-o", "/dev/null", "--max-time", "2.5"),
                *("-w", "%{size_download} %{time_total}", url),
            ],
        ),
        capture_output=True,
        text=True,
    )
    size, seconds = (float(x) for x in r.stdout.split())
    return size / seconds if seconds > 0 else float("inf")


def run(sc: Scenario, out: Path, shoal: Path | None = None) -> dict[str, Any]:
    shoal = shoal or Path(sys.executable).parent / "shoal"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    r = Run(sc, out, shoal)
    try:
        r.build()
        r.publish()
        factor = calibrate(r)
        servers = sc.origin_bps + (sc.edges * sc.edge_bps if sc.warm_edges else 0)
        links = Links(
            server_up=servers / 8 * factor,
            host_up=tuple(sc.host_rate(i) / 8 * factor for i in range(sc.hosts)),
            host_down=tuple(sc.host_rate(i) / 8 * factor for i in range(sc.hosts)),
        )
        systems = {}
        for name in sc.systems:
            systems[name] = _system_figures(sc, links, r.run_system(name))
    finally:
        r.stop_all()
        r.fleet.teardown()
    result = {
        "scenario": asdict(sc),
        "goodput_factor": round(factor, 4),
        "t_min_s": round(t_min(sc.model_size, links), 3),
        "http_only_bound_s": round(http_only_bound(sc.model_size, links), 3),
        "systems": systems,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(r.work, ignore_errors=True)
    write_plots(result, out)
    return result
