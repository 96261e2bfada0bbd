"""Benchmark: do the agent's caps hold? A ``shoal agent --upload-rate X`` seeds a model to
a plain libtorrent leecher on loopback; the agent's own ``/metrics`` counter
(``shoal_seed_upload_bytes``) is sampled over a 10 s window after a 2 s warm-up, and the
measured rate is compared with X (goal: within 10 %). The same for ``--http-rate X``: an
agent pulls from ``shoal seed`` and the origin's HTTP egress is sampled the same way.

    .venv/bin/python bench/agent_caps.py [--size-mib 1024] [--caps 5M,20M,50M]

Writes bench/results/agent_caps.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import libtorrent as lt  # noqa: E402

from shoal.publishing.publish import PublishOptions, publish  # noqa: E402
from shoal.publishing.sources import directory_source  # noqa: E402
from shoal.ref import ModelRef  # noqa: E402
from shoal.testing import (  # noqa: E402
    free_port,
    start_local_seed,
    stop_processes,
    wait_listening,
    write_blob,
)
from shoal.units import parse_size  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"


def uploaded(url: str, token: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    return next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("shoal_seed_upload_bytes ")
    )


def upload_window(store: Path, torrent: Path, cap: str, leech: Path) -> dict[str, object]:
    """One agent seeding ``store`` under ``--upload-rate cap`` to a fresh leecher."""
    api, bt = free_port(), free_port()
    agent = subprocess.Popen(
        [
            str(SHOAL),
            "agent",
            "--models-dir",
            str(store),
            "--api-port",
            str(api),
            "--host",
            "127.0.0.1",
            "--port",
            str(bt),
            "--no-lsd",
            "--upload-rate",
            cap,
        ],
        stderr=subprocess.DEVNULL,
    )
    ses = None
    try:
        wait_listening(api, agent, "shoal agent")
        url, token = f"http://127.0.0.1:{api}", (store / "agent.token").read_text().strip()
        ses = lt.session(
            {
                "listen_interfaces": f"127.0.0.1:{free_port()}",
                "enable_dht": False,
                "enable_lsd": False,
                "allow_multiple_connections_per_ip": True,
                # TCP, as shoal's peers use: libtorrent's uTP on loopback stalls at a
                # few MB/s, which measured the leecher instead of the cap
                "enable_outgoing_utp": False,
                "enable_incoming_utp": False,
            }
        )
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(str(torrent))
        params.save_path = str(leech)
        h = ses.add_torrent(params)
        h.connect_peer(("127.0.0.1", bt))
        time.sleep(2.0)  # warm-up: connection, unchoke, rate limiter filled
        t0, b0 = time.monotonic(), uploaded(url, token)
        time.sleep(10.0)
        t1, b1 = time.monotonic(), uploaded(url, token)
        rate = (b1 - b0) / (t1 - t0)
        limit = parse_size(cap)
        return {
            "cap_bytes_s": limit,
            "measured_bytes_s": round(rate),
            "ratio": round(rate / limit, 3),
            "window_s": round(t1 - t0, 2),
            "leecher_done": bool(h.status().is_seeding),
        }
    finally:
        if ses is not None:
            del ses
        stop_processes([agent])
        shutil.rmtree(leech, ignore_errors=True)


def served(origin: str) -> float:
    text = httpx.get(f"{origin}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shoal_origin_bytes_served_total")
    )


def http_window(origin: str, cap: str, store: Path) -> dict[str, object]:
    """An agent pulling from ``origin`` under ``--http-rate cap``: the origin's HTTP
    egress over 10 s after a 2 s warm-up."""
    api = free_port()
    agent = subprocess.Popen(
        [
            *(str(SHOAL), "agent", "--models-dir", str(store), "--api-port", str(api)),
            *("--host", "127.0.0.1", "--no-lsd", "--edge", origin, "--http-rate", cap),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(api, agent, "shoal agent")
        token = (store / "agent.token").read_text().strip()
        httpx.post(
            f"http://127.0.0.1:{api}/v1/pulls",
            json={"ref": "caps:v1"},
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()
        time.sleep(2.0)
        t0, b0 = time.monotonic(), served(origin)
        time.sleep(10.0)
        t1, b1 = time.monotonic(), served(origin)
        rate, limit = (b1 - b0) / (t1 - t0), parse_size(cap)
        return {
            "cap_bytes_s": limit,
            "measured_bytes_s": round(rate),
            "ratio": round(rate / limit, 3),
            "window_s": round(t1 - t0, 2),
        }
    finally:
        stop_processes([agent])
        shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--caps", default="5M,20M,50M", help="upload caps to measure, in turn")
    args = ap.parse_args()
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "results") as tmp:
        work = Path(tmp)
        write_blob(work / "src" / "model.gguf", args.size_mib << 20, 1)
        pub = publish(
            directory_source(work / "src"),
            PublishOptions(ref=ModelRef.parse("caps:v1"), out=work / "pub"),
        )
        port = free_port()
        seed = start_local_seed(SHOAL, [pub.out], port, free_port(), stderr=subprocess.DEVNULL)
        store = work / "store"
        subprocess.run(
            [
                str(SHOAL),
                "pull",
                "caps:v1",
                "--edge",
                f"http://127.0.0.1:{port}",
                "--no-lsd",
                "--models-dir",
                str(store),
                "--json",
            ],
            check=True,
            capture_output=True,
        )
        origin = f"http://127.0.0.1:{port}"
        fallback = []
        for cap in args.caps.split(","):
            fallback.append(http_window(origin, cap, work / "http-store"))
            print(json.dumps({"http": fallback[-1]}))
        stop_processes([seed])
        uploads = []
        for cap in args.caps.split(","):
            uploads.append(upload_window(store, pub.torrent_path, cap, work / "leech"))
            print(json.dumps(uploads[-1]))
    result = {"size_bytes": args.size_mib << 20, "upload": uploads, "http": fallback}
    out = ROOT / "bench" / "results" / "agent_caps.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
