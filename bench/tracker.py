"""Benchmark: announces/s and latency of ``shoal tracker serve`` against opentracker.

Both trackers run on this machine in the same run, loaded by ``wrk`` with
``bench/announce.lua`` (distinct peers over a fixed set of published swarms,
compact answers, numwant=50). opentracker (Debian) is given the same
info-hashes in its whitelist. Writes JSON with both and the ratio.

    .venv/bin/python bench/tracker.py [--seconds 10] [--connections 32] [--swarms 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.coordinator_client import CoordinatorClient  # noqa: E402
from shoal.publishing.publish import PublishOptions, publish  # noqa: E402
from shoal.publishing.sources import directory_source  # noqa: E402
from shoal.ref import ModelRef  # noqa: E402
from shoal.testing import free_port, stop_processes, wait_listening, write_model_dir  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"


def run_wrk(
    port: int, script: Path, seconds: int, connections: int, threads: int
) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    r = json.loads(line.removeprefix("RESULT "))
    rps = r["requests"] / (r["duration_us"] / 1e6)
    # opentracker closes the connection after every answer; wrk counts each close as a
    # read error and reconnects, so "read" errors there are not failed announces.
    return {
        "announces_per_s": round(rps, 1),
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "requests": r["requests"],
        "errors": {k: r[f"errors_{k}"] for k in ("status", "connect", "read", "timeout")},
    }


def check_answer(port: int, encoded: str) -> bytes:
    import httpx

    q = (
        f"info_hash={encoded}&peer_id=-CHK000-000000000000&port=7000&uploaded=0"
        "&downloaded=0&left=0&compact=1"
    )
    body = httpx.get(f"http://127.0.0.1:{port}/announce?{q}").content
    if b"failure" in body:
        raise SystemExit(f"tracker on {port} refused the benchmark's announce: {body[:200]!r}")
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--swarms", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tracker.json")
    args = ap.parse_args()
    for tool in ("wrk", "opentracker"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian package {tool})")

    work = Path(tempfile.mkdtemp(prefix="shoal-bench-tracker-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        token = "bench-token"
        procs.append(
            subprocess.Popen(
                [
                    str(SHOAL),
                    "tracker",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--db",
                    str(work / "state" / "registry.sqlite"),
                    "--publish-token",
                    token,
                    "--rate-limit",
                    "0",
                ],
                stderr=subprocess.DEVNULL,
            )
        )
        wait_listening(port, procs[-1], "shoal tracker")
        hashes = []
        with CoordinatorClient(f"http://127.0.0.1:{port}", token) as cc:
            for i in range(args.swarms):
                src = write_model_dir(work / f"m{i}", {"w.bin": 100_000 + i}, seed=i)
                pub = publish(
                    directory_source(src),
                    PublishOptions(ref=ModelRef.parse(f"bench{i}:v1"), out=work / f"p{i}"),
                )
                cc.publish(pub.manifest, pub.torrent_path.read_bytes())
                hashes.append(pub.manifest.info_hash_v1)
        encoded = ["".join(f"%{b:02X}" for b in h) for h in hashes]
        script = work / "announce.lua"
        lua = (ROOT / "bench" / "announce.lua").read_text()
        script.write_text(
            lua.replace("HASHES = {}", "HASHES = {" + ", ".join(f'"{e}"' for e in encoded) + "}")
        )
        check_answer(port, encoded[0])

        ot_port = free_port()
        whitelist = work / "whitelist.txt"
        whitelist.write_text("".join(h.hex() + "\n" for h in hashes))
        conf = work / "opentracker.conf"
        conf.write_text("access.whitelist /whitelist.txt\n")  # read after chroot to work/
        work.chmod(0o755)  # opentracker drops to nobody and chroots here
        procs.append(
            subprocess.Popen(
                [
                    "opentracker",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(ot_port),
                    "-P",
                    str(free_port()),
                    "-f",
                    str(conf),
                    "-d",
                    str(work),
                    "-u",
                    "nobody",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_listening(ot_port, procs[-1], "opentracker")
        check_answer(ot_port, encoded[0])

        results = {}
        for name, p in (("shoal", port), ("opentracker", ot_port)):
            run_wrk(p, script, 2, args.connections, args.threads)  # warm up
            results[name] = run_wrk(p, script, args.seconds, args.connections, args.threads)
            print(f"{name}: {results[name]}", file=sys.stderr)
        shoal_rps = results["shoal"]["announces_per_s"]
        report = {
            "benchmark": "tracker announces",
            "load": {
                "tool": "wrk + bench/announce.lua",
                "seconds": args.seconds,
                "connections": args.connections,
                "threads": args.threads,
                "swarms": args.swarms,
                "numwant": 50,
            },
            "shoal": results["shoal"],
            "opentracker": results["opentracker"],
            "ratio_shoal_over_opentracker": round(
                shoal_rps / results["opentracker"]["announces_per_s"], 3
            ),
            "goal": {"announces_per_s": 5000, "p99_ms": 50},
            "goal_met": shoal_rps >= 5000
            and results["shoal"]["p99_ms"] < 50
            and not any(results["shoal"]["errors"].values()),
            "machine": {"cpus": os.cpu_count()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1))
    finally:
        stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
