"""Benchmark: what TLS costs the edge, and what BitTorrent encryption costs a pull.

In one run, on one model of ``--size-mib`` (one file) over loopback:

- TLS: two ``shoal edge serve`` in front of one origin, one plain HTTP and one HTTPS
  (a CA made here, curl checking against it); both caches warm; curl downloads the blob
  from each, alternating, ``--rounds`` times. Figure: HTTPS throughput over HTTP.
- BitTorrent encryption: ``shoal pull`` from an origin seeding over BitTorrent (found
  through the coordinator's tracker, not listed as an HTTP source, so every byte comes
  over BitTorrent), with ``--encryption off`` on both sides
  and with ``--encryption require`` (RC4) on both sides, alternating, ``--rounds`` times.
  Figure: the time of an encrypted pull over a plaintext one.

    .venv/bin/python bench/crypto_cost.py [--size-mib 1024] [--rounds 3]

Writes bench/results/crypto_cost.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.edge import curl_mb_s  # noqa: E402
from shoal.bencode import decode  # noqa: E402
from shoal.coordinator_client import CoordinatorClient  # noqa: E402
from shoal.publishing.publish import Published, PublishOptions, publish  # noqa: E402
from shoal.publishing.sources import file_source  # noqa: E402
from shoal.ref import ModelRef  # noqa: E402
from shoal.testing import free_port, stop_processes, wait_listening, write_blob  # noqa: E402
from tests.tls_ca import TestCA  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"


def wait_seeded(url: str, info_hash: bytes) -> None:
    """Until the tracker lists a seed of ``info_hash`` (a pull that announces first would
    wait a whole announce interval for it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        raw = httpx.get(f"{url}/scrape?info_hash={quote(info_hash, safe='')}", timeout=5).content
        if int(decode(raw).get(b"files", {}).get(info_hash, {}).get(b"complete", 0)) > 0:
            return
        time.sleep(0.2)
    raise SystemExit("the origin did not announce")


def start(procs: list[subprocess.Popen[bytes]], port: int, *argv: str) -> None:
    procs.append(subprocess.Popen([str(SHOAL), *argv], stderr=subprocess.DEVNULL))
    wait_listening(port, procs[-1], argv[0])


def tls_cost(work: Path, pub_out: Path, digest: str, rounds: int) -> dict[str, object]:
    ca = TestCA(work / "ca")
    cert = ca.issue("edge")
    procs: list[subprocess.Popen[bytes]] = []
    origin, plain, secure = free_port(), free_port(), free_port()
    try:
        start(
            procs,
            origin,
            "seed",
            str(pub_out),
            "--host",
            "127.0.0.1",
            "--port",
            str(origin),
            "--no-bittorrent",
        )
        for port, extra in (
            (plain, []),
            (secure, ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]),
        ):
            start(
                procs,
                port,
                *("edge", "serve", "--upstream", f"http://127.0.0.1:{origin}"),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--cache-dir", str(work / f"cache-{port}"), *extra),
            )
        urls = {
            "http": (f"http://127.0.0.1:{plain}/blobs/{digest}", None),
            "https": (f"https://127.0.0.1:{secure}/blobs/{digest}", ca.pem),
        }
        for url, pem in urls.values():  # fill each cache, then its page cache
            curl_mb_s(url, pem)
        for cache in work.glob("cache-*"):
            subprocess.run(
                ["cat", *map(str, cache.rglob("*.chunk"))], check=True, stdout=subprocess.DEVNULL
            )
        got: dict[str, list[float]] = {"http": [], "https": []}
        for _ in range(rounds):
            for name, (url, pem) in urls.items():
                got[name].append(curl_mb_s(url, pem))
    finally:
        stop_processes(procs)
    http, https = statistics.median(got["http"]), statistics.median(got["https"])
    return {
        "edge_http_mb_s": round(http, 1),
        "edge_https_mb_s": round(https, 1),
        "https_over_http": round(https / http, 3),
        "runs_mb_s": got,
    }


def encryption_cost(work: Path, pub: Published, rounds: int) -> dict[str, object]:
    """Pulls over BitTorrent from an origin found through a coordinator's tracker (a new
    one per pull: the last pull's dead peers are not listed)."""
    times: dict[str, list[float]] = {"off": [], "require": []}
    for n in range(rounds):
        for mode in ("off", "require"):
            procs: list[subprocess.Popen[bytes]] = []
            coord, origin, bt = free_port(), free_port(), free_port()
            url = f"http://127.0.0.1:{coord}"
            try:
                start(
                    procs,
                    coord,
                    *("tracker", "serve", "--host", "127.0.0.1", "--port", str(coord)),
                    *("--db", str(work / f"coord-{mode}-{n}.sqlite"), "--publish-token", "pub"),
                    *("--fleet-token", "fleet", "--rate-limit", "0"),
                    "--no-private",  # the origin announces with no token (not listed)
                )
                with CoordinatorClient(url, "pub") as c:
                    c.publish(pub.manifest, pub.torrent_path.read_bytes())
                start(
                    procs,
                    origin,
                    *("seed", str(pub.out), "--host", "127.0.0.1", "--port", str(origin)),
                    *("--bt-listen", f"127.0.0.1:{bt}", "--encryption", mode),
                    # announced to the tracker, not listed as an HTTP source: BitTorrent only
                    *("--coordinator", url),
                )
                wait_seeded(url, pub.manifest.info_hash_v1)
                store = work / f"pull-{mode}-{n}"
                began = time.monotonic()
                done = subprocess.run(
                    [
                        *(str(SHOAL), "pull", "bench:crypto", "--models-dir", str(store)),
                        *("--coordinator", url, "--token", "fleet", "--host", "127.0.0.1"),
                        *("--no-lsd", "--encryption", mode, "--json"),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                took = time.monotonic() - began
                if done.returncode != 0:
                    raise SystemExit(f"pull with --encryption {mode} failed: {done.stderr}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                if int(result["bytes_peer"]) < int(result["bytes"]) * 0.9:
                    raise SystemExit(f"the pull did not come over BitTorrent: {result}")
                times[mode].append(took)
                shutil.rmtree(store, ignore_errors=True)
            finally:
                stop_processes(procs)
    off, req = statistics.median(times["off"]), statistics.median(times["require"])
    return {
        "pull_plaintext_s": round(off, 2),
        "pull_encrypted_s": round(req, 2),
        "encrypted_over_plaintext": round(req / off, 3),
        "runs_s": times,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-crypto-") as tmp:
        work = Path(tmp)
        big = write_blob(work / "model" / "big.bin", a.size_mib << 20, seed=5)
        pub = publish(
            file_source(big), PublishOptions(ref=ModelRef.parse("bench:crypto"), out=work / "pub")
        )
        digest = str(pub.manifest.files[0].sha256)
        out = {
            "size_mib": a.size_mib,
            "tls": tls_cost(work, pub.out, digest, a.rounds),
            "bittorrent": encryption_cost(work, pub, a.rounds),
        }
    print(json.dumps(out, indent=1))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "crypto_cost.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
