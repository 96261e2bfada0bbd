"""Issue 29, item 1: pull-through. A model the fleet has never seen is fetched from its
upstream registry once, by the origin (``shoal seed --upstream``), and reaches every host
through the fleet; each host's own client asks its agent's registry mirror.

The upstream is Debian's docker-registry holding an ollama-format model pushed through
the registry API; the clients do what ``ollama serve``'s downloader does
(tests/peer/mirror/ollama_client.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from shoal.coordinator_client import CoordinatorClient
from shoal.digest import Digest
from shoal.errors import NotFound
from shoal.ref import ModelRef
from shoal.testing import ServerThread, blob_fixture, free_port, stop_processes, wait_listening
from tests.conftest import SHOAL
from tests.peer.conftest import Fleet
from tests.peer.mirror import ollama_client
from tests.seeder.upstream import (
    LyingRegistry,
    SlowProxy,
    TokenRegistry,
    UpstreamRegistry,
)

LAYERS = [
    ("application/vnd.ollama.image.model", blob_fixture(20 * 1024 * 1024 + 4321, seed=11)),
    ("application/vnd.ollama.image.template", b"{{ .System }} {{ .Prompt }}"),
    ("application/vnd.ollama.image.license", b"MIT, of course"),
]
CONFIG = b'{"model_format":"gguf","model_family":"llama","rootfs":{"type":"layers"}}'


class PullThrough:
    def __init__(self, tmp: Path, upstream: UpstreamRegistry, fleet: Fleet) -> None:
        self.tmp, self.upstream, self.fleet = tmp, upstream, fleet
        self.procs: list[subprocess.Popen[str]] = []
        self.mirrors: list[str] = []
        self.manifest = b""
        self.origin = ""
        self.edge = ""

    def start_origin(self, *extra: str) -> None:
        self.start_origin_with("--upstream", f"registry.ollama.ai={self.upstream.url}", *extra)

    def start_origin_with(self, *args: str) -> None:
        """``shoal seed`` registered with the fleet's coordinator, fetching upstream as
        ``args`` say."""
        port = free_port()
        proc = subprocess.Popen(
            [
                *(str(SHOAL), "seed", "--host", "127.0.0.1", "--port", str(port)),
                *("--bt-listen", f"127.0.0.1:{free_port()}", "--no-bittorrent"),
                *("--coordinator", self.fleet.coord_url, "--token", "edge"),
                *("--ingest-dir", str(self.tmp / "ingest"), *args),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        wait_listening(port, proc, "shoal seed")
        self.origin = f"http://127.0.0.1:{port}"

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.origin}/metrics", timeout=10).text
        return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name))

    def start_edge(self) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                *(str(SHOAL), "edge", "serve", "--upstream", self.origin),
                *("--host", "127.0.0.1", "--port", str(port), "--public-url", url),
                *("--cache-dir", str(self.tmp / "edge"), "--coordinator", self.fleet.coord_url),
                *("--token", "edge"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        wait_listening(port, proc, "shoal edge serve")
        deadline = time.monotonic() + 20
        while url not in {e["url"] for e in CoordinatorClient(self.fleet.coord_url).edges()}:
            assert time.monotonic() < deadline, "the edge did not register"
            time.sleep(0.1)
        self.edge = url

    def edge_served(self) -> float:
        text = httpx.get(f"{self.edge}/metrics", timeout=10).text
        return sum(
            float(x.rsplit(" ", 1)[1])
            for x in text.splitlines()
            if x.startswith("shoal_edge_bytes_served_total")
        )

    def start_agents(self, n: int, *extra: str) -> None:
        for i in range(len(self.mirrors), len(self.mirrors) + n):
            api, mirror = free_port(), free_port()
            proc = subprocess.Popen(
                [
                    *(str(SHOAL), "agent", "--models-dir", str(self.tmp / f"host{i}")),
                    *("--api-port", str(api), "--host", "127.0.0.1", "--no-lsd"),
                    *("--mirror", f"127.0.0.1:{mirror}"),
                    *("--coordinator", self.fleet.coord_url, "--token", "fleet", *extra),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            wait_listening(mirror, proc, "the agent's mirror")
            self.mirrors.append(f"http://127.0.0.1:{mirror}")


@pytest.fixture
def pull_through(tmp_path: Path) -> Iterator[PullThrough]:
    upstream = UpstreamRegistry(tmp_path / "upstream")
    upstream.start()
    fleet = Fleet(tmp_path)
    p = PullThrough(tmp_path, upstream, fleet)
    try:
        p.manifest = upstream.push("library/tiny", "1", LAYERS, CONFIG)
        fleet.start_coordinator()
        yield p
    finally:
        stop_processes([*p.procs, *(x for x in (fleet.coordinator,) if x is not None)])
        upstream.stop()


def test_three_hosts_pull_an_unseen_model_through_their_mirrors_fetched_upstream_once(
    pull_through: PullThrough,
) -> None:
    """Coordinator, origin with upstream access, an edge in front of it, three agents."""
    p = pull_through
    p.start_origin()
    p.start_edge()
    p.start_agents(3)
    with ThreadPoolExecutor(3) as pool:
        pulled = list(
            pool.map(
                lambda i: ollama_client.pull(
                    p.mirrors[i], "library", "tiny", "1", p.tmp / f"ollama{i}"
                ),
                range(3),
            )
        )
    doc = json.loads(p.manifest)
    for i, got in enumerate(pulled):
        assert got.manifest == p.manifest  # byte for byte: its digest holds
        host = p.mirrors[i].removeprefix("http://")
        assert (p.tmp / f"ollama{i}/manifests/{host}/library/tiny/1").read_bytes() == p.manifest
        for (_, data), layer in zip(LAYERS, doc["layers"], strict=True):
            blob = p.tmp / f"ollama{i}/blobs" / layer["digest"].replace(":", "-")
            assert blob.read_bytes() == data
    # the upstream sent each blob's bytes once in all, whatever number of ranges
    for layer in [doc["config"], *doc["layers"]]:
        _, sent = p.upstream.sent(f"/blobs/{layer['digest']}")
        assert sent == layer["size"], (layer, sent)
    assert p.edge_served() > 0  # the hosts fetched over HTTP through the edge
    # the origin's own count: one ingest, the model's bytes from upstream once
    assert p.metric('shoal_upstream_ingests_total{result="done"}') == 1
    sizes = sum(x["size"] for x in [doc["config"], *doc["layers"]])
    assert p.metric("shoal_upstream_bytes_total") == sizes
    # registered for the fleet: later pulls resolve it at the coordinator
    with CoordinatorClient(p.fleet.coord_url) as c:
        assert c.resolve(ModelRef.parse("tiny:1")).ref == ModelRef.parse("tiny:1")


def test_a_tag_upstream_does_not_have_is_not_found(pull_through: PullThrough) -> None:
    p = pull_through
    p.start_origin()
    p.start_agents(1)
    r = httpx.get(f"{p.mirrors[0]}/v2/library/nothere/manifests/1", timeout=60)
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert "nothere" in r.json()["errors"][0]["message"]


def test_without_an_origin_that_fetches_upstream_an_unknown_model_is_not_found(
    pull_through: PullThrough, tmp_path: Path
) -> None:
    p = pull_through
    done = subprocess.run(
        [
            *(str(SHOAL), "pull", "tiny:1", "--models-dir", str(tmp_path / "solo")),
            *("--coordinator", p.fleet.coord_url, "--token", "fleet", "--host", "127.0.0.1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "not published here" in done.stderr and "--upstream" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_ingested_model_is_served_again_after_the_origin_restarts(
    pull_through: PullThrough, tmp_path: Path
) -> None:
    p = pull_through
    p.start_origin()
    r = shoal_pull(p.fleet, "tiny:1", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    stop_processes(p.procs)
    p.procs.clear()
    p.upstream.stop()  # the fleet holds it now: no upstream needed
    p.start_origin()
    time.sleep(0.5)
    r = shoal_pull(p.fleet, "tiny:1", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    blob = tmp_path / "b" / "blobs" / f"sha256-{hashlib.sha256(LAYERS[0][1]).hexdigest()}"
    assert blob.read_bytes() == LAYERS[0][1]


def shoal_pull(
    fleet: Fleet, ref: str, models: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(str(SHOAL), "pull", ref, "--models-dir", str(models), "--host", "127.0.0.1"),
            *("--coordinator", fleet.coord_url, "--token", "fleet", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def start_origin(fleet: Fleet, upstream_url: str, work: Path, *extra: str) -> subprocess.Popen[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(str(SHOAL), "seed", "--host", "127.0.0.1", "--port", str(port), "--no-bittorrent"),
            *("--coordinator", fleet.coord_url, "--token", "edge"),
            *("--upstream", f"registry.ollama.ai={upstream_url}", "--ingest-dir", str(work)),
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_listening(port, proc, "shoal seed --upstream")
    return proc


LIES = [
    ("badblob", "does not match its digest"),
    ("moving", "moved upstream during the ingest"),
    ("baddigest", "its bytes are sha256:"),
]


@pytest.mark.parametrize(("name", "says"), LIES)
def test_an_upstream_that_lies_is_refused_and_nothing_is_published(
    tmp_path: Path, name: str, says: str
) -> None:
    fleet = Fleet(tmp_path)
    origin = None
    try:
        fleet.start_coordinator()
        with ServerThread(LyingRegistry()) as liar:
            origin = start_origin(fleet, liar.url, tmp_path / "ingest")
            done = shoal_pull(fleet, f"{name}:1", tmp_path / "host")
        assert done.returncode == 6, done.stderr
        assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
        with CoordinatorClient(fleet.coord_url) as c, pytest.raises(NotFound):
            c.resolve(ModelRef.parse(f"{name}:1"))
        assert not list((tmp_path / "ingest" / "published").glob("*"))
        for blob in (tmp_path / "ingest").rglob("sha256-*"):  # named only when it hashed so
            if not blob.name.endswith((".partial", ".ranges")):
                assert blob.name == Digest.of(blob.read_bytes()).filename
        assert not (tmp_path / "host" / "blobs").exists() or not any(
            (tmp_path / "host" / "blobs").iterdir()
        )
    finally:
        stop_processes([p for p in (origin, fleet.coordinator) if p is not None])


def test_an_ingest_cut_by_an_upstream_outage_resumes_when_it_returns(tmp_path: Path) -> None:
    """The registry is killed while the origin fetches the model layer (each range slowed
    to 4 MB/s by a relay) and started again 2 s later: the ingest goes on from what it had, and the
    pull completes with the right bytes."""
    layer = blob_fixture(96 * 1024 * 1024, seed=21)
    upstream = UpstreamRegistry(tmp_path / "upstream")
    upstream.start()
    fleet = Fleet(tmp_path)
    origin = None
    try:
        upstream.push("library/big", "1", [("application/vnd.ollama.image.model", layer)], CONFIG)
        fleet.start_coordinator()
        with SlowProxy(upstream.port, 4 << 20) as relay:
            origin = start_origin(fleet, f"http://127.0.0.1:{relay.port}", tmp_path / "ingest")
            with ThreadPoolExecutor(1) as pool:
                pulling = pool.submit(shoal_pull, fleet, "big:1", tmp_path / "host")
                partial = tmp_path / "ingest" / "ollama" / "blobs"
                deadline = time.monotonic() + 60
                while not any(
                    p.stat().st_size and _fetched(p) > 12 << 20 for p in partial.glob("*.ranges")
                ):
                    assert time.monotonic() < deadline, "the ingest did not start"
                    time.sleep(0.05)
                upstream.kill()
                recorded = sum(_fetched(p) for p in partial.glob("*.ranges"))
                time.sleep(2)
                restarted = upstream.log.stat().st_size
                upstream.start()
                done = pulling.result(timeout=180)
        assert done.returncode == 0, done.stderr
        digest = Digest.of(layer)
        held = tmp_path / "host" / "blobs" / digest.filename
        assert held.read_bytes() == layer
        # resumed from what was recorded: after its restart the registry sent the rest of
        # the ranges the outage cut, not the layer again
        _, sent = upstream.sent(f"/blobs/{digest}", since=restarted)
        assert recorded >= 12 << 20
        assert 0 < sent <= len(layer) - recorded, (sent, recorded)
    finally:
        stop_processes([p for p in (origin, fleet.coordinator) if p is not None])
        upstream.stop()


def _fetched(record: Path) -> int:
    try:
        return sum(json.loads(record.read_text())["done"].values())
    except (OSError, ValueError, KeyError):
        return 0


def test_an_upstream_behind_basic_auth_takes_the_credentials_file(tmp_path: Path) -> None:
    upstream = UpstreamRegistry(tmp_path / "upstream", user=("puller", "s3cret"))
    upstream.start()
    fleet = Fleet(tmp_path)
    procs: list[subprocess.Popen[str]] = []
    try:
        upstream.push("library/locked", "1", LAYERS[1:], CONFIG)
        upstream.push("library/locked", "2", LAYERS[1:], CONFIG)
        fleet.start_coordinator()
        assert httpx.get(f"{upstream.url}/v2/library/locked/manifests/1").status_code == 401
        origin = start_origin(fleet, upstream.url, tmp_path / "ingest")
        procs.append(origin)
        refused = shoal_pull(fleet, "locked:1", tmp_path / "a")
        assert refused.returncode == 6 and "asks for credentials" in refused.stderr, refused.stderr
        stop_processes(procs)
        procs.clear()
        creds = tmp_path / "upstream.creds"
        creds.write_text("# host user:password\nregistry.ollama.ai puller:s3cret\n")
        procs.append(
            start_origin(
                fleet, upstream.url, tmp_path / "ingest", "--upstream-credentials", str(creds)
            )
        )
        # another tag: the refusal of locked:1 stands for the coordinator's retry_after
        done = shoal_pull(fleet, "locked:2", tmp_path / "b")
        assert done.returncode == 0, done.stderr
        blob = tmp_path / "b" / "blobs" / Digest.of(LAYERS[1][1]).filename
        assert blob.read_bytes() == LAYERS[1][1]
    finally:
        stop_processes([*procs, *(p for p in (fleet.coordinator,) if p is not None)])
        upstream.stop()


def test_a_tag_that_moves_upstream_is_checked_again_and_only_what_changed_moves(
    tmp_path: Path,
) -> None:
    """With --tag-ttl 1, a resolve of the tag a second after its ingest still answers the
    registered version and has the origin ask upstream again; the tag now names a new
    manifest (a new template, the same weights): it is registered, and a host that pulls
    it again fetches only the changed layer, while the upstream sent the weights once."""
    upstream = UpstreamRegistry(tmp_path / "upstream")
    upstream.start()
    fleet = Fleet(tmp_path)
    procs: list[subprocess.Popen[str]] = []
    try:
        first = upstream.push("library/tiny", "1", LAYERS, CONFIG)
        fleet.coordinator = subprocess.Popen(
            [
                *(str(SHOAL), "tracker", "serve", "--host", "127.0.0.1"),
                *("--port", str(fleet.coord_port), "--db", str(tmp_path / "coord.sqlite")),
                *("--publish-token", "pub", "--fleet-token", "fleet", "--edge-token", "edge"),
                *("--rate-limit", "0", "--tag-ttl", "1"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_listening(fleet.coord_port, fleet.coordinator, "shoal tracker serve")
        procs.append(start_origin(fleet, upstream.url, tmp_path / "ingest"))
        assert shoal_pull(fleet, "tiny:1", tmp_path / "host").returncode == 0
        changed = [LAYERS[0], ("application/vnd.ollama.image.template", b"{{ .New }}"), LAYERS[2]]
        second = upstream.push("library/tiny", "1", changed, CONFIG)
        assert second != first
        time.sleep(1.2)
        ref = ModelRef.parse("tiny:1")
        with CoordinatorClient(fleet.coord_url) as c:
            old = c.resolve(ref)  # the registered version, at once; the check runs beside
            deadline = time.monotonic() + 60
            while (new := c.resolve(ref)).digest == old.digest:
                assert time.monotonic() < deadline, "the moved tag was not ingested again"
                time.sleep(0.2)
        assert {f.sha256 for f in new.files} != {f.sha256 for f in old.files}
        again = shoal_pull(fleet, "tiny:1", tmp_path / "host", "--json")
        assert again.returncode == 0, again.stderr
        done = json.loads(again.stdout.splitlines()[-1])
        assert int(done["bytes_reused"]) >= len(LAYERS[0][1]), done  # the weights stayed
        weights = Digest.of(LAYERS[0][1])
        _, sent = upstream.sent(f"/blobs/{weights}")
        assert sent == len(LAYERS[0][1])  # fetched from upstream once, in both versions
    finally:
        stop_processes([*procs, *(p for p in (fleet.coordinator,) if p is not None)])
        upstream.stop()


def test_an_upstream_that_wants_a_bearer_token_gets_one_from_its_token_service(
    tmp_path: Path,
) -> None:
    """As registry.ollama.ai and Docker Hub: a 401 names the token service; the origin
    asks it (with the credentials file's Basic credentials) for a token of the scope the
    challenge gave, and fetches with it. Without credentials the service refuses."""
    fleet = Fleet(tmp_path)
    registry = TokenRegistry(("puller", "s3cret"))
    procs: list[subprocess.Popen[str]] = []
    try:
        fleet.start_coordinator()
        with ServerThread(registry) as server:
            registry.url = server.url
            procs.append(start_origin(fleet, server.url, tmp_path / "ingest"))
            refused = shoal_pull(fleet, "tok:1", tmp_path / "a")
            assert refused.returncode == 6, refused.stderr
            assert "token service" in refused.stderr and "401" in refused.stderr
            stop_processes(procs)
            procs.clear()
            creds = tmp_path / "creds"
            creds.write_text("registry.ollama.ai puller:s3cret\n")
            procs.append(
                start_origin(
                    fleet, server.url, tmp_path / "ingest2", "--upstream-credentials", str(creds)
                )
            )
            # another tag: the refusal of tok:1 stands for the coordinator's retry_after
            done = shoal_pull(fleet, "tok:2", tmp_path / "b")
        assert done.returncode == 0, done.stderr
        blob = tmp_path / "b" / "blobs" / Digest.of(registry.layer).filename
        assert blob.read_bytes() == registry.layer
        assert set(registry.token_asks) == {"repository:library/tok:pull"}
        assert len(registry.token_asks) == 2  # refused once, then one token for the fetch
    finally:
        stop_processes([*procs, *(p for p in (fleet.coordinator,) if p is not None)])
