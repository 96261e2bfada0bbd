"""Benchmark: real clients of ``shoal seed`` and ``shoal edge serve`` under slowloris and
slow-read, with this code and with a baseline revision, in the same run.

For each server: 2,000 attacking connections from 100 loopback addresses (20 each,
under the per-client limit) for ``--seconds``: half send a request head one byte
every 10 s (slowloris), half ask for a 64 MiB blob with a 4 KiB receive buffer and
never read (slow-read). An attacker whose connection is closed opens another at once.
Meanwhile a real client on 127.0.0.1 asks for 1 MiB ranges of the blob, one
connection each, 10 s timeout, every 0.2 s. The figure is the share of its requests
served with the right bytes. The baseline revision (default: the code before the
fix) runs the same servers from a git worktree; a run without attack checks the
client.

    .venv/bin/python bench/slowloris.py [--seconds 60] [--baseline-rev 11082be]

Writes ``bench/results/slowloris.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.coordinator_client import CoordinatorClient  # noqa: E402
from shoal.publishing.publish import PublishOptions, publish  # noqa: E402
from shoal.publishing.sources import file_source  # noqa: E402
from shoal.ref import ModelRef  # noqa: E402
from shoal.testing import free_port, stop_processes, wait_listening, write_blob  # noqa: E402

SIZE = 64 << 20
ATTACKERS = [f"127.0.{a}.{b}" for a in (20, 21) for b in range(10, 60)]  # 100 addresses
CONNECTIONS = 2000
PART = 1 << 20


# ``shoal`` from the checkout named by PYTHONPATH (``_env``): ahead of the editable install
SHOAL = [
    sys.executable,
    "-c",
    "import sys; from shoal_cli import main; sys.argv[0] = 'shoal'; main()",
]


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code)}


async def _attack(host: str, port: int, path: str, seconds: float) -> dict[str, int]:
    """Keep ``CONNECTIONS`` attacking connections open for ``seconds``."""
    loop = asyncio.get_running_loop()
    stats = {"opened": 0, "closed_by_server": 0, "connect_failed": 0}
    end = time.monotonic() + seconds
    ask = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    async def one(i: int) -> None:
        slow_read = i % 2 == 1
        while time.monotonic() < end:
            s = socket.socket()
            s.setblocking(False)
            if slow_read:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((ATTACKERS[i % len(ATTACKERS)], 0))
            try:
                await asyncio.wait_for(loop.sock_connect(s, (host, port)), 5)
            except (OSError, TimeoutError):
                stats["connect_failed"] += 1
                s.close()
                await asyncio.sleep(0.5)
                continue
            stats["opened"] += 1
            try:
                if slow_read:
                    await loop.sock_sendall(s, ask)
                    # never read; notice the server closing (TCP state CLOSE_WAIT, 8)
                    while (
                        time.monotonic() < end
                        and s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 8
                    ):
                        await asyncio.sleep(1)
                else:
                    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
                    for b in head + b"a" * 10_000:
                        if time.monotonic() >= end:
                            break
                        await loop.sock_sendall(s, bytes([b]))
                        await asyncio.sleep(10)
            except OSError:
                pass  # the server cut this connection: the loop opens another
            finally:
                s.close()
            stats["closed_by_server"] += time.monotonic() < end

    await asyncio.gather(*(one(i) for i in range(CONNECTIONS)))
    return stats


def _attacker(host: str, port: int, path: str, seconds: float, out: Any) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out.put(asyncio.run(_attack(host, port, path, seconds)))


def _client(url: str, data: bytes, seconds: float) -> dict[str, float]:
    ok = total = 0
    waits = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        start = (i * PART) % (len(data) - PART)
        i += 1
        total += 1
        t = time.monotonic()
        try:
            r = httpx.get(url, headers={"Range": f"bytes={start}-{start + PART - 1}"}, timeout=10)
            good = r.status_code == 206 and r.content == data[start : start + PART]
        except httpx.HTTPError:
            good = False
        ok += good
        if good:
            waits.append(time.monotonic() - t)
        time.sleep(0.2)
    waits.sort()
    return {
        "requests": total,
        "served": ok,
        "share": round(ok / total, 4) if total else 0.0,
        "median_s": round(waits[len(waits) // 2], 4) if waits else None,
        "p99_s": round(waits[int(len(waits) * 0.99)], 4) if waits else None,
    }


def _measure(url: str, data: bytes, host: str, port: int, path: str, seconds: float) -> Any:
    q: Any = multiprocessing.Queue()
    attacker = multiprocessing.Process(target=_attacker, args=(host, port, path, seconds + 5, q))
    attacker.start()
    time.sleep(5)  # the attack builds up first
    client = _client(url, data, seconds)
    stats = q.get(timeout=seconds + 60)
    attacker.join(timeout=30)
    return {**client, "attack": stats}


def _run_code(
    code: Path, label: str, pub: Path, coord: str, digest: str, data: bytes, args: Any
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    sport, eport = free_port(), free_port()
    seed = subprocess.Popen(
        [*SHOAL, "seed", str(pub), "--host", "127.0.0.1", "--port", str(sport), "--no-bittorrent"],
        env=_env(code),
        stderr=subprocess.DEVNULL,
        cwd=code,
    )
    edge = None
    try:
        wait_listening(sport, seed, "shoal seed")
        cache = Path(tempfile.mkdtemp(prefix="slowloris-cache-"))
        edge = subprocess.Popen(
            [
                *SHOAL,
                "edge",
                "serve",
                "--upstream",
                f"http://127.0.0.1:{sport}",
                "--host",
                "127.0.0.1",
                "--port",
                str(eport),
                "--cache-dir",
                str(cache),
                "--max-size",
                "1GiB",
                "--coordinator",
                coord,
            ],
            env=_env(code),
            stderr=subprocess.DEVNULL,
            cwd=code,
        )
        wait_listening(eport, edge, "shoal edge serve")
        for name, port in (("seed", sport), ("edge", eport)):
            url = f"http://127.0.0.1:{port}/blobs/{digest}"
            assert httpx.get(url, timeout=120).content == data  # warm (the edge's cache too)
            quiet = _client(url, data, 5)
            attacked = _measure(url, data, "127.0.0.1", port, f"/blobs/{digest}", args.seconds)
            results[name] = {"without_attack": quiet, "under_attack": attacked}
            print(label, name, json.dumps(results[name]), flush=True)
    finally:
        stop_processes([p for p in (seed, edge) if p is not None])
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--baseline-rev", default="11082be")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="slowloris-"))
    blob = work / "model.gguf"
    write_blob(blob, SIZE, seed=11)
    data = blob.read_bytes()
    pub = publish(
        file_source(blob),
        PublishOptions(ref=ModelRef.parse("bench/slowloris:1"), out=work / "pub"),
    )
    digest = str(pub.manifest.files[0].sha256)
    cport = free_port()
    coord = subprocess.Popen(
        [
            *SHOAL,
            "tracker",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(cport),
            "--db",
            str(work / "coord.sqlite"),
            "--publish-token",
            "p",
            "--rate-limit",
            "0",
        ],
        env=_env(ROOT),
        stderr=subprocess.DEVNULL,
    )
    baseline = work / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.baseline_rev],
        check=True,
        capture_output=True,
    )
    try:
        wait_listening(cport, coord, "shoal tracker serve")
        coord_url = f"http://127.0.0.1:{cport}"
        with CoordinatorClient(coord_url, "p") as cc:
            cc.publish(pub.manifest, pub.torrent_path.read_bytes())
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out: dict[str, Any] = {
            "connections": CONNECTIONS,
            "addresses": len(ATTACKERS),
            "seconds": args.seconds,
            "blob_bytes": SIZE,
            "this": {
                "rev": head,
                **_run_code(ROOT, "this", pub.out, coord_url, digest, data, args),
            },
            "baseline": {
                "rev": args.baseline_rev,
                **_run_code(baseline, "baseline", pub.out, coord_url, digest, data, args),
            },
        }
    finally:
        stop_processes([coord])
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
            capture_output=True,
        )
    for name in ("seed", "edge"):
        this = out["this"][name]["under_attack"]["share"]
        base = out["baseline"][name]["under_attack"]["share"]
        out[f"{name}_served_share"] = {"this": this, "baseline": base}
    dest = ROOT / "bench" / "results" / "slowloris.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k.endswith("share")}, indent=2))


if __name__ == "__main__":
    main()
