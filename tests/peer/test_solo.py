"""Issue 29, item 1, with no coordinator: agents with ``--upstream`` on one LAN (network
namespaces joined by a bridge) fetch a model from the upstream registry once for the LAN
and share it over BitTorrent, finding each other by multicast (peer/lan.py) and LSD.

The upstream is Debian's docker-registry on a host of its own; each host's client does
what ``ollama serve``'s downloader does, against its own agent's mirror.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peer.store import Store
from scenarios.netns import Fleet, Node, call_in, exec_argv, wait_port
from shoal.ref import ModelRef
from shoal.testing import stop_processes
from tests.conftest import SHOAL
from tests.peer.mirror import ollama_client
from tests.seeder.test_ingest import CONFIG, LAYERS
from tests.seeder.upstream import UpstreamRegistry

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
MIRROR = 8474
REF = ModelRef.parse("tiny:1")


@dataclass
class Lan:
    tmp: Path
    fleet: Fleet
    upstream: UpstreamRegistry
    hosts: list[Node] = field(default_factory=list)
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    manifest: bytes = b""

    def start_agents(self, n: int, *extra: str) -> None:
        for _ in range(n):
            self.hosts.append(self.fleet.add(f"h{len(self.hosts) + 1}"))
        self.fleet.pin_neighbours()
        for node in self.hosts[len(self.agents) :]:
            log = (self.tmp / f"agent-{node.name}.log").open("ab")
            argv = [
                *(str(SHOAL), "agent", "--models-dir", str(self.tmp / node.name)),
                *("--host", node.addr, "--port", "6881", "--mirror", f"127.0.0.1:{MIRROR}"),
                *("--upstream", f"registry.ollama.ai={self.upstream.url}", "--lsd"),
                *("--min-free", "0", *extra),
            ]
            proc = subprocess.Popen(exec_argv(node.ns, argv), stdout=log, stderr=log)
            self.agents.append(proc)
            wait_port(node.ns, "127.0.0.1", MIRROR, proc)

    def pull(self, node: Node) -> ollama_client.Pulled:
        out = self.tmp / f"ollama-{node.name}"
        return call_in(
            node.ns,
            lambda: ollama_client.pull(f"http://127.0.0.1:{MIRROR}", "library", "tiny", "1", out),
        )

    def check(self, node: Node, got: ollama_client.Pulled) -> None:
        assert got.manifest == self.manifest  # byte for byte: its digest holds
        doc = json.loads(self.manifest)
        for (_, data), layer in zip(LAYERS, doc["layers"], strict=True):
            blob = self.tmp / f"ollama-{node.name}/blobs" / layer["digest"].replace(":", "-")
            assert blob.read_bytes() == data

    def upstream_sent(self) -> list[int]:
        doc = json.loads(self.manifest)
        return [
            self.upstream.sent(f"/blobs/{b['digest']}")[1] for b in [doc["config"], *doc["layers"]]
        ]

    def sizes(self) -> list[int]:
        doc = json.loads(self.manifest)
        return [b["size"] for b in [doc["config"], *doc["layers"]]]


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    fleet = Fleet(queue_ms=20, tcp_congestion=None)
    fleet.create()
    upstream: UpstreamRegistry | None = None
    lan: Lan | None = None
    try:
        node = fleet.add("up")
        upstream = UpstreamRegistry(tmp_path / "upstream", port=5000, host=node.addr, netns=node.ns)
        upstream.start()
        lan = Lan(tmp_path, fleet, upstream)
        lan.manifest = upstream.push("library/tiny", "1", LAYERS, CONFIG)
        yield lan
    finally:
        if lan is not None:
            stop_processes(lan.agents)
        if upstream is not None:
            upstream.stop()
        fleet.teardown()


@needs_root
def test_three_hosts_without_a_coordinator_fetch_a_model_upstream_once_for_the_lan(
    lan: Lan,
) -> None:
    lan.start_agents(3)
    with ThreadPoolExecutor(3) as pool:
        pulled = list(pool.map(lan.pull, lan.hosts))
    for node, got in zip(lan.hosts, pulled, strict=True):
        lan.check(node, got)
    assert lan.upstream_sent() == lan.sizes()  # each blob's bytes once for the whole LAN
    # every host published the same torrent from the same bytes: one swarm
    held = [Store(lan.tmp / n.name).open().resolve(REF) for n in lan.hosts]
    assert all(m is not None for m in held)
    assert len({m.info_hash_v1 for m in held if m is not None}) == 1

    # a host that joins later gets it from the LAN, not upstream
    lan.start_agents(1)
    late = lan.hosts[-1]
    lan.check(late, lan.pull(late))
    assert lan.upstream_sent() == lan.sizes()
