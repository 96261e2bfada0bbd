"""Benchmark: a model the fleet has never seen, asked for at once by N hosts' own clients
through their agents' registry mirrors, is fetched from its upstream registry once.

Upstream: Debian's docker-registry holding an ollama-format model, behind a relay that
caps it at ``--upstream-rate`` in all (an internet link; the fleet's own links are
loopback). Fleet: a coordinator, an origin with ``--upstream`` (HTTP only) and N agents,
each asked by a client doing what ``ollama serve`` does (tests/peer/mirror/ollama_client.py).
A probe on host 0 times the first byte of the model layer from a manifest GET.

Baseline, in the same run: one host fetching the model straight from the same upstream
through the same relay, with shoal's registry client (4 parallel ranges) - what each host
would do alone. Figures: upstream bytes / model size (goal 1.00), the fleet's time for N
hosts over the baseline's time for one, the first-byte latency.

With ``--lan`` (root): no coordinator and no origin. The hosts are network namespaces on
one bridge, each agent started with ``--upstream`` (peer/solo.py: the LAN fetches the model
from upstream once, the hosts find each other by multicast and LSD); the upstream is a
host of its own whose uplink is shaped with tbf at ``--upstream-rate``. The baseline is
the same: one host alone with shoal's registry client, over the same shaped link.

    .venv/bin/python bench/pull_through.py [--size-mib 256] [--hosts 3,8] [--upstream-rate 50M]
        [--lan]

Writes bench/results/pull_through.json (with --lan: pull_through_lan.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from shoal.digest import Digest  # noqa: E402
from shoal.testing import free_port, stop_processes, wait_listening  # noqa: E402
from shoal.units import parse_size  # noqa: E402
from shoal.upstream.client import RegistryClient  # noqa: E402
from tests.peer.mirror import ollama_client  # noqa: E402
from tests.seeder.upstream import UpstreamRegistry  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"
CONFIG = b'{"model_format":"gguf","model_family":"llama"}'
BURST = 0.05  # seconds of link time an idle relay may send at once


class Relay:
    """A TCP relay from the upstream at ``rate`` bytes/s shared by all its connections."""

    def __init__(self, target: int, rate: int) -> None:
        self.target, self.rate, self.port = target, rate, free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.next_free = 0.0

    def __enter__(self) -> Relay:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _serve(self) -> None:
        # on a second address too: a data host apart from the API, behind the same link
        hosts = ["127.0.0.1", "127.0.0.2"]
        self.server = await asyncio.start_server(self._conn, hosts, self.port)

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, paced: bool) -> None:
            try:
                with contextlib.suppress(OSError):  # a side closed: so does the relay
                    while data := await src.read(65536):
                        if paced:  # one shared link: each block waits for its turn on it
                            # (time the link stood idle counts, up to BURST: one stream's
                            # own reads and writes between blocks do not slow the link)
                            now = time.monotonic()
                            start = max(now - BURST, self.next_free)
                            self.next_free = start + len(data) / self.rate
                            if self.next_free > now:
                                await asyncio.sleep(self.next_free - now)
                        dst.write(data)
                        await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pipe(r, uw, False), pipe(ur, w, True))


def one_alone(url: str, doc: dict[str, object], work: Path) -> float:
    client = RegistryClient(url)
    start = time.monotonic()
    client.manifest("library/model", "1")
    for layer in [doc["config"], *doc["layers"]]:  # type: ignore[list-item]
        d = Digest.parse(layer["digest"])
        client.blob("library/model", d, int(layer["size"]), work / d.filename)
    client.close()
    return time.monotonic() - start


def first_byte(mirror: str, digest: str) -> float:
    start = time.monotonic()
    m = httpx.get(f"{mirror}/v2/library/model/manifests/1", timeout=600)
    m.raise_for_status()
    with httpx.stream(
        "GET", f"{mirror}/v2/library/model/blobs/{digest}", follow_redirects=True, timeout=600
    ) as r:
        for _ in r.iter_raw(1):
            return time.monotonic() - start
    raise RuntimeError("no bytes")


def push_model(upstream: UpstreamRegistry, size: int) -> tuple[dict[str, Any], int]:
    """Push a model of ``size`` random bytes (and a template); its manifest and size."""
    raw = upstream.push(
        "library/model",
        "1",
        [
            ("application/vnd.ollama.image.model", os.urandom(size)),
            ("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
        ],
        CONFIG,
    )
    doc = json.loads(raw)
    return doc, sum(int(x["size"]) for x in [doc["config"], *doc["layers"]])


def start_fleet(
    tmp: Path, hosts: int, origin_args: list[str], procs: list[subprocess.Popen[bytes]]
) -> tuple[str, list[str]]:
    """A coordinator, an origin fetching upstream as ``origin_args`` say (HTTP only) and
    ``hosts`` agents with mirrors, as processes added to ``procs``; the origin's URL and
    the mirrors'."""
    coord, origin = free_port(), free_port()
    procs.append(
        subprocess.Popen(
            [
                *(str(SHOAL), "tracker", "serve", "--host", "127.0.0.1"),
                *("--port", str(coord), "--db", str(tmp / "coord.sqlite")),
                *("--publish-token", "pub", "--fleet-token", "fleet"),
                *("--edge-token", "edge", "--rate-limit", "0"),
            ],
            stderr=subprocess.DEVNULL,
        )
    )
    wait_listening(coord, procs[-1], "tracker")
    coord_url = f"http://127.0.0.1:{coord}"
    procs.append(
        subprocess.Popen(
            [
                *(str(SHOAL), "seed", "--host", "127.0.0.1", "--port", str(origin)),
                *("--no-bittorrent", "--coordinator", coord_url, "--token", "edge"),
                *origin_args,
                *("--ingest-dir", str(tmp / "ingest")),
            ],
            stderr=subprocess.DEVNULL,
        )
    )
    wait_listening(origin, procs[-1], "origin")
    mirrors = []
    for i in range(hosts):
        mirror = free_port()
        procs.append(
            subprocess.Popen(
                [
                    *(str(SHOAL), "agent", "--models-dir", str(tmp / f"h{i}")),
                    *("--api-port", str(free_port()), "--host", "127.0.0.1", "--no-lsd"),
                    *("--mirror", f"127.0.0.1:{mirror}", "--min-free", "0"),
                    *("--coordinator", coord_url, "--token", "fleet"),
                ],
                stderr=subprocess.DEVNULL,
            )
        )
        wait_listening(mirror, procs[-1], "agent mirror")
        mirrors.append(f"http://127.0.0.1:{mirror}")
    return f"http://127.0.0.1:{origin}", mirrors


def fleet_run(tmp: Path, size: int, hosts: int, rate: int) -> dict[str, object]:
    upstream = UpstreamRegistry(tmp / "upstream")
    upstream.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        doc, model_bytes = push_model(upstream, size)
        with Relay(upstream.port, rate) as relay:
            relay_url = f"http://127.0.0.1:{relay.port}"
            alone = one_alone(relay_url, doc, tmp / "alone")
            origin, mirrors = start_fleet(
                tmp, hosts, ["--upstream", f"registry.ollama.ai={relay_url}"], procs
            )
            start = time.monotonic()
            with ThreadPoolExecutor(hosts + 1) as pool:
                probe = pool.submit(first_byte, mirrors[0], doc["layers"][0]["digest"])
                pulls = [
                    pool.submit(ollama_client.pull, m, "library", "model", "1", tmp / f"ollama{i}")
                    for i, m in enumerate(mirrors)
                ]
                for p in pulls:
                    p.result(timeout=1800)
                took = time.monotonic() - start
                latency = probe.result(timeout=60)
        metrics = httpx.get(f"{origin}/metrics").text
        fetched = sum(
            float(x.rsplit(" ", 1)[1])
            for x in metrics.splitlines()
            if x.startswith("shoal_upstream_bytes_total")
        )
        _, logged = upstream.sent("/blobs/")
        return {
            "hosts": hosts,
            "model_bytes": model_bytes,
            "upstream_bytes": int(fetched),
            "upstream_bytes_logged": logged,
            "upstream_over_model": round(fetched / model_bytes, 4),
            "one_host_alone_s": round(alone, 2),
            "fleet_s": round(took, 2),
            "fleet_over_one_alone": round(took / alone, 3),
            "first_byte_s": round(latency, 2),
        }
    finally:
        stop_processes(procs)
        upstream.stop()


def lan_run(tmp: Path, size: int, hosts: int, rate: int) -> dict[str, object]:
    """The same figures for a LAN of agents with ``--upstream`` and no coordinator."""
    from scenarios.netns import Fleet, call_in, exec_argv, wait_port

    fleet = Fleet(queue_ms=20, tcp_congestion=None)
    fleet.create()
    procs: list[subprocess.Popen[bytes]] = []
    upstream: UpstreamRegistry | None = None
    try:
        up = fleet.add("up", up_bps=rate * 8)
        nodes = [fleet.add(f"h{i}") for i in range(hosts)]
        fleet.pin_neighbours()
        upstream = UpstreamRegistry(tmp / "upstream", port=5000, host=up.addr, netns=up.ns)
        upstream.start()
        doc, model_bytes = push_model(upstream, size)
        alone = call_in(nodes[0].ns, lambda: one_alone(upstream.url, doc, tmp / "alone"))
        since = upstream.log.stat().st_size
        for n in nodes:
            argv = [
                *(str(SHOAL), "agent", "--models-dir", str(tmp / n.name)),
                *("--host", n.addr, "--port", "6881", "--mirror", "127.0.0.1:8474"),
                *("--upstream", f"registry.ollama.ai={upstream.url}", "--min-free", "0"),
            ]
            procs.append(subprocess.Popen(exec_argv(n.ns, argv), stderr=subprocess.DEVNULL))
        for n, proc in zip(nodes, procs, strict=True):
            wait_port(n.ns, "127.0.0.1", 8474, proc)
        mirror = "http://127.0.0.1:8474"
        start = time.monotonic()
        with ThreadPoolExecutor(hosts + 1) as pool:
            probe = pool.submit(
                call_in, nodes[0].ns, lambda: first_byte(mirror, doc["layers"][0]["digest"])
            )
            pulls = [
                pool.submit(
                    call_in,
                    n.ns,
                    lambda n=n: ollama_client.pull(
                        mirror, "library", "model", "1", tmp / f"ollama-{n.name}"
                    ),
                )
                for n in nodes
            ]
            for p in pulls:
                p.result(timeout=1800)
            took = time.monotonic() - start
            latency = probe.result(timeout=60)
        _, fetched = upstream.sent("/blobs/", since)
        return {
            "hosts": hosts,
            "model_bytes": model_bytes,
            "upstream_bytes_logged": fetched,
            "upstream_over_model": round(fetched / model_bytes, 4),
            "one_host_alone_s": round(alone, 2),
            "fleet_s": round(took, 2),
            "fleet_over_one_alone": round(took / alone, 3),
            "first_byte_s": round(latency, 2),
        }
    finally:
        stop_processes(procs)
        if upstream is not None:
            upstream.stop()
        fleet.teardown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--hosts", default="3,8")
    ap.add_argument("--upstream-rate", default="50M")
    ap.add_argument("--lan", action="store_true", help="No coordinator: agents on a LAN.")
    a = ap.parse_args()
    rate = parse_size(a.upstream_rate)
    run = lan_run if a.lan else fleet_run
    runs = []
    for n in (int(x) for x in a.hosts.split(",")):
        with tempfile.TemporaryDirectory(prefix="shoal-pt-") as tmp:
            runs.append(run(Path(tmp), a.size_mib << 20, n, rate))
            print(json.dumps(runs[-1]), flush=True)
    out = {"size_mib": a.size_mib, "upstream_rate": a.upstream_rate, "lan": a.lan, "runs": runs}
    name = "pull_through_lan.json" if a.lan else "pull_through.json"
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / name).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
