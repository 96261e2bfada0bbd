"""Issue 29, item 1, with no coordinator: agents with ``--upstream`` on one LAN (network
namespaces joined by a bridge) fetch a model from the upstream registry once for the LAN
and share it over BitTorrent, finding each other by multicast (peer/lan.py) and LSD.

The upstream is Debian's docker-registry on a host of its own; each host's client does
what ``ollama serve``'s downloader does, against its own agent's mirror.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from peer import lan as lan_mod
from peer.budget import BudgetError
from peer.session import SessionSettings, TorrentSession
from peer.solo import Solo, _from_lan, pull, upstream_digest
from peer.store import Store
from scenarios.netns import Fleet, Node, call_in, exec_argv, wait_port
from shoal import ollama_manifest as om
from shoal.digest import Digest
from shoal.errors import IntegrityError
from shoal.publishing.ollama import MANIFEST_PATH
from shoal.publishing.publish import PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import blob_fixture, stop_processes
from shoal.upstream.fetch import Upstream, UpstreamSettings, blobs_of
from tests.conftest import SHOAL
from tests.peer.mirror import ollama_client
from tests.seeder.test_ingest import CONFIG, LAYERS
from tests.seeder.upstream import CONFIG_TYPE, DOCKER_MANIFEST, UpstreamRegistry

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


# A LAN host that lies, in one process: it seeds a torrent and names it for the model.

REAL = blob_fixture(300_000, seed=3)


def upstream_model() -> tuple[bytes, list[om.Blob]]:
    """An upstream manifest of one layer (``REAL``) and a config, and its blobs."""
    config = b'{"model_format":"gguf"}'
    layers = [(CONFIG_TYPE, config), ("application/vnd.ollama.image.model", REAL)]
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": CONFIG_TYPE, "digest": str(Digest.of(config)), "size": 23},
        "layers": [
            {"mediaType": m, "digest": str(Digest.of(d)), "size": len(d)} for m, d in layers[1:]
        ],
    }
    raw = json.dumps(doc).encode()
    return raw, blobs_of(raw, REF, "the test")


def liar_seeds(tmp: Path, files: dict[str, bytes]) -> tuple[TorrentSession, bytes]:
    """A session seeding ``files`` published as a model; returns it and the info-hash."""
    src = tmp / "liar-src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    pub = publish(directory_source(src), PublishOptions(ref=REF, out=tmp / "liar-pub"))
    ses = TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False))
    ses.seed("liar", pub.manifest, pub.torrent_path.read_bytes(), pub.out / "blobs")
    return ses, pub.manifest.info_hash_v1


def from_liar(tmp: Path, files: dict[str, bytes], raw: bytes, blobs: list[om.Blob]) -> Path:
    """``_from_lan`` against the liar; returns the upstream store it would fill."""
    liar, info_hash = liar_seeds(tmp, files)
    ses = TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False))
    settings = UpstreamSettings((Upstream.parse("http://127.0.0.1:9"),), tmp / "work")
    beacon = lan_mod.Beacon(lan_mod.parse_group(lan_mod.DEFAULT_GROUP), None, lambda _: None)
    solo = Solo(settings, beacon, metadata_timeout=20, stall_timeout=20)
    try:
        with pytest.raises(IntegrityError) as info:
            asyncio.run(_from_lan(solo, ses, {("127.0.0.1", liar.port): info_hash}, raw, blobs))
        assert not any((settings.work / "lan").iterdir())  # what it sent is gone
        assert "LAN" in info.value.message
        return settings.store
    finally:
        ses.close()
        liar.close()


def test_a_torrent_from_the_lan_that_lists_other_files_is_refused(tmp_path: Path) -> None:
    raw, blobs = upstream_model()
    store = from_liar(tmp_path, {"weights.bin": REAL, "other.txt": b"x"}, raw, blobs)
    assert not store.exists()


def test_a_lan_file_under_a_blob_s_name_with_other_bytes_is_never_given_that_name(
    tmp_path: Path,
) -> None:
    raw, blobs = upstream_model()
    model = next(b for b in blobs if b.size == len(REAL))
    lie = {  # the right names and sizes; one blob's bytes are not those its name says
        MANIFEST_PATH: raw,
        **{f"blobs/{b.digest.filename}": b'{"model_format":"gguf"}' for b in blobs if b != model},
        f"blobs/{model.digest.filename}": blob_fixture(len(REAL), seed=4),
    }
    store = from_liar(tmp_path, lie, raw, blobs)
    assert not (store / "blobs" / model.digest.filename).exists()


def test_a_model_over_the_budget_is_refused_before_a_byte_is_fetched(tmp_path: Path) -> None:
    upstream = UpstreamRegistry(tmp_path / "upstream")
    upstream.start()
    ses = TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False))
    try:
        upstream.push("library/tiny", "1", LAYERS, CONFIG)
        settings = UpstreamSettings(
            (Upstream.parse(f"registry.ollama.ai={upstream.url}"),), tmp_path / "store/upstream"
        )
        beacon = lan_mod.Beacon(lan_mod.parse_group(lan_mod.DEFAULT_GROUP), None, lambda _: None)
        store = Store(tmp_path / "store").open()
        asked: list[int] = []

        def no_room(need: int) -> None:
            asked.append(need)
            raise BudgetError("the store's budget is 1 MiB", "raise --max-store-size")

        with pytest.raises(BudgetError):
            asyncio.run(pull(REF, Solo(settings, beacon, listen=0), store, ses, no_room))
        assert asked == [sum(len(d) for _, d in LAYERS) + len(CONFIG) + len(upstream_raw(upstream))]
        assert upstream.sent("/blobs/") == (0, 0)  # nothing fetched
        assert store.resolve(REF) is None and not any(store.blobs.iterdir())
    finally:
        ses.close()
        upstream.stop()


def upstream_raw(upstream: UpstreamRegistry) -> bytes:
    with httpx.Client(base_url=upstream.url) as c:
        r = c.get("/v2/library/tiny/manifests/1", headers={"Accept": DOCKER_MANIFEST})
        return r.content


def test_a_tag_that_moved_upstream_fetches_only_the_changed_blobs(tmp_path: Path) -> None:
    """One host alone (its LAN group off): the tag is read upstream at every pull, and
    a new manifest fetches only the blobs the store lacks."""
    upstream = UpstreamRegistry(tmp_path / "upstream")
    upstream.start()
    ses = TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False))
    try:
        first = upstream.push("library/tiny", "1", LAYERS, CONFIG)
        settings = UpstreamSettings(
            (Upstream.parse(f"registry.ollama.ai={upstream.url}"),), tmp_path / "store/upstream"
        )
        beacon = lan_mod.Beacon(lan_mod.parse_group(lan_mod.DEFAULT_GROUP), None, lambda _: None)
        solo, store = Solo(settings, beacon, listen=0), Store(tmp_path / "store").open()
        got = asyncio.run(pull(REF, solo, store, ses))
        assert got.bytes_upstream == sum(len(d) for _, d in LAYERS) + len(CONFIG)
        again = asyncio.run(pull(REF, solo, store, ses))
        assert again.already_present and again.manifest.digest == got.manifest.digest
        changed = [LAYERS[0], ("application/vnd.ollama.image.template", b"{{ .New }}"), LAYERS[2]]
        second = upstream.push("library/tiny", "1", changed, CONFIG)
        moved = asyncio.run(pull(REF, solo, store, ses))
        assert moved.bytes_upstream == len(b"{{ .New }}")  # the weights did not move again
        assert upstream_digest(moved.manifest) == Digest.of(second) != Digest.of(first)
        assert store.resolve(REF) == moved.manifest and not store.missing(moved.manifest)
        weights = Digest.of(LAYERS[0][1])
        assert upstream.sent(f"/blobs/{weights}")[1] == len(LAYERS[0][1])  # once, in ranges
    finally:
        ses.close()
        upstream.stop()
