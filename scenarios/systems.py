"""The systems a simulation compares, each on the same stage: shoal (an agent per host,
pulls handed to it), plain HTTP (curl from the edges or origin) and aria2c (BitTorrent with
a web seed). Each starts its hosts' clients on the stage's timeline and reports per host."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
import time
from typing import Any

from peer.agent.client import find_agent, pull_via_agent
from peer.progress import Snapshot
from scenarios.demo import HostRun
from scenarios.netns import Node, call_in, exec_argv, wait_port
from scenarios.stage import (
    API_PORT,
    BT_PORT,
    EDGE_PORT,
    FLEET_TOKEN,
    ORIGIN_PORT,
    REF,
    Stage,
    SystemRun,
)
from shoal.errors import RemoteError, ShoalError
from shoal.ref import ModelRef
from shoal.testing import stop_processes


def run_shoal(stage: Stage) -> SystemRun:
    published = stage.work / "published-hybrid"
    if stage.sc.coordinator:
        stage.coordinator(published)
    stage.origin(published, bittorrent=False)
    stage.start_edges(published)
    if stage.sc.coordinator:
        fleet: tuple[str, ...] = (*stage.registration(FLEET_TOKEN), "--no-lsd")
    else:  # a LAN: peers by LSD, the model and HTTP chunks from the edges and origin
        servers = [stage.url(e.name, EDGE_PORT) for e in stage.edges]
        servers.append(stage.url("origin", ORIGIN_PORT))
        fleet = ("--lsd", *(arg for url in servers for arg in ("--edge", url)))
    runs = {h.name: HostRun(h.name, stage.work / "shoal" / h.name) for h in stage.hosts}

    def agent(h: Node) -> None:
        models = runs[h.name].models
        (models / "agent.json").unlink(missing_ok=True)  # a killed agent's
        stage.start(
            h.name,
            f"agent-{h.name}",
            [
                *(stage.shoal, "agent", "--models-dir", str(models)),
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
        proc = stage.procs.running[f"agent-{h.name}"]
        proc.kill()
        proc.wait()

    for h in stage.hosts:
        agent(h)
    for h in stage.hosts:
        serving(h)
    stage.on_leave, stage.on_back, stage.on_ready = leave, agent, serving
    run = SystemRun("shoal", list(runs.values()))
    # what `shoal pull` does before it asks (read agent.json, check the agent answers)
    # is done now, not on the clock: 32 of those at once took 0.4-0.5 s of flash-32's
    # start, a cost of this runner's threads, not of the pull. A pull after its agent
    # came back (churn) looks for it again
    found: dict[str, tuple[str, str] | None] = {
        h.name: call_in(h.ns, functools.partial(find_agent, runs[h.name].models))
        for h in stage.hosts
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
                back_again = stage.away.get(node.name)
                if host.result is not None or back_again is None:
                    return
                back_again.wait(stage.sc.timeout_s)

        t = threading.Thread(target=body, daemon=True)
        t.start()
        return t

    stage.timed(run, launch)
    origin = stage.url("origin", ORIGIN_PORT)
    for host in run.hosts:
        host.account(lambda url: url.endswith(f":{EDGE_PORT}"), origin)
    return run


def run_http_only(stage: Stage) -> SystemRun:
    published = stage.work / "published-hybrid"
    stage.coordinator(None)
    stage.origin(published, bittorrent=False)
    stage.start_edges(published)
    manifest = json.loads((published / "manifest.json").read_text())
    sources = [stage.url(e.name, EDGE_PORT) for e in stage.edges] or [
        stage.url("origin", ORIGIN_PORT)
    ]
    run = SystemRun(
        "http_only", [HostRun(h.name, stage.work / "http" / h.name) for h in stage.hosts]
    )
    current: dict[str, subprocess.Popen[str]] = {}

    def leave(h: Node) -> None:
        proc = current.get(h.name)
        if proc is not None and proc.poll() is None:
            proc.kill()

    stage.on_leave, stage.on_back, stage.on_ready = leave, lambda h: None, lambda h: None

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
                    returned = stage.away.get(node.name)
                    if returned is None:
                        host.error = f"curl exit {proc.returncode}"
                        return
                    returned.wait(stage.sc.timeout_s)
                else:
                    host.error = "curl failed after the host came back"
                    return
            host.done_s = time.monotonic() - started
            if stage.edges:
                host.edge = stage.sc.model_size
            else:
                host.origin = stage.sc.model_size

        t = threading.Thread(target=body, daemon=True)
        t.start()
        return t

    stage.timed(run, launch)
    return run


def run_aria2c(stage: Stage) -> SystemRun:
    """A swarm of Debian's aria2c on the v1 torrent (aria2 reads no v2), with the
    coordinator as tracker, the origin seeding and serving the web seed. Each client
    seeds on until every host is done; its completion time comes from aria2c's own
    download-complete hook. A host that leaves (churn) has its aria2c SIGKILLed; back,
    it starts aria2c again on the same directory, as an operator would: progress saved
    every second, existing data checked (``-V``) and kept."""
    published = stage.work / "published-v1"
    stage.coordinator(published)
    stage.origin(published, bittorrent=True)
    torrent = next(published.glob("*.torrent"))
    run = SystemRun(
        "aria2c", [HostRun(h.name, stage.work / "aria2c" / h.name) for h in stage.hosts]
    )
    hook = stage.work / "aria2c-done.sh"
    hook.write_text('#!/bin/sh\ndate +%s.%N > "$ARIA2_DONE"\n')
    hook.chmod(0o755)
    clients: list[subprocess.Popen[bytes]] = []
    current: dict[str, subprocess.Popen[bytes]] = {}
    dirs = {h.name: host.models for h, host in zip(stage.hosts, run.hosts, strict=True)}

    def start(node: Node) -> None:
        models = dirs[node.name]
        models.mkdir(parents=True, exist_ok=True)
        log = (stage.procs.logs / f"aria2c-{node.name}.log").open("ab")
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

    stage.on_leave, stage.on_back, stage.on_ready = leave, start, lambda h: None

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
                returned = stage.away.get(node.name)
                if returned is None or (returned.is_set() and current[node.name] is proc):
                    host.error = f"aria2c exit {proc.returncode}"
                    return
                returned.wait(stage.sc.timeout_s)  # churned: its next aria2c goes on

        t = threading.Thread(target=body, daemon=True)
        t.start()
        return t

    try:
        stage.timed(run, launch)
    finally:
        stop_processes(clients)
    return run


def run_system(stage: Stage, name: str) -> SystemRun:
    try:
        systems = {
            "shoal": run_shoal,
            "http_only": run_http_only,
            "aria2c": run_aria2c,
        }
        return systems[name](stage)
    finally:
        stage.on_leave = stage.on_back = None
        stage.stop_all()
