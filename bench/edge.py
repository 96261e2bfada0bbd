"""Benchmark: HTTP serving by ``shoal seed`` and ``shoal edge serve`` against nginx.

In the same run, on one 1 GiB file (warm page cache): nginx serving the file
statically (sendfile on), ``shoal seed`` serving it as a blob, a cold-miss pass
through ``shoal edge serve`` (fetch, verify, cache, send), then warm hits at the
edge. Clients: ``curl`` to /dev/null, and ``aria2c -x8 -s8`` to a file. Medians
of several rounds; writes JSON with throughputs and ratios to nginx.

    .venv/bin/python bench/edge.py [--size-mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.publishing.publish import PublishOptions, publish  # noqa: E402
from shoal.publishing.sources import file_source  # noqa: E402
from shoal.ref import ModelRef  # noqa: E402
from shoal.testing import (  # noqa: E402
    free_port,
    start_local_seed,
    stop_processes,
    wait_listening,
    write_blob,
)

SHOAL = Path(sys.executable).parent / "shoal"


def curl_mb_s(url: str, ca: Path | None = None) -> float:
    """curl's download rate of ``url`` (MB/s), checking HTTPS against ``ca``."""
    tls = ["--cacert", str(ca)] if ca else []
    out = subprocess.run(
        ["curl", "-s", *tls, "-o", "/dev/null", "-w", "%{speed_download} %{http_code}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if out[1] != "200":
        raise SystemExit(f"{url} answered {out[1]}")
    return float(out[0]) / 1e6


def aria2_mb_s(url: str, size: int, work: Path) -> float:
    out = work / "aria2-out"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(
        [
            "aria2c",
            "-q",
            "-x8",
            "-s8",
            "--min-split-size=16M",
            "--file-allocation=none",
            f"--dir={out}",
            "-o",
            "f",
            url,
        ],
        check=True,
    )
    mb_s = size / (time.perf_counter() - t) / 1e6
    shutil.rmtree(out, ignore_errors=True)
    return mb_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "edge.json")
    args = ap.parse_args()
    for tool in ("nginx", "curl", "aria2c"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-edge-", dir=ROOT / "bench"))
    work.chmod(0o755)  # nginx workers run as nobody
    procs: list[subprocess.Popen[bytes]] = []
    try:
        size = args.size_mib << 20
        big = write_blob(work / "model" / "big.bin", size, seed=9)
        pub = publish(
            file_source(big), PublishOptions(ref=ModelRef.parse("bench:edge"), out=work / "pub")
        )
        digest = pub.manifest.files[0].sha256
        blob = work / "pub" / "blobs" / digest.filename
        subprocess.run(["cat", str(blob)], check=True, stdout=subprocess.DEVNULL)

        seed_port, edge_port, nginx_port = free_port(), free_port(), free_port()
        procs.append(
            start_local_seed(SHOAL, [pub.out], seed_port, free_port(), stderr=subprocess.DEVNULL)
        )
        procs.append(
            subprocess.Popen(
                [
                    str(SHOAL),
                    "edge",
                    "serve",
                    "--upstream",
                    f"http://127.0.0.1:{seed_port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(edge_port),
                    "--cache-dir",
                    str(work / "cache"),
                    "--max-size",
                    f"{2 * args.size_mib}MiB",
                ],
                stderr=subprocess.DEVNULL,
            )
        )
        wait_listening(edge_port, procs[-1], "shoal edge")
        www = work / "www"
        www.mkdir()
        os.link(blob, www / "big.bin")
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f;
  uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
  server {{ listen 127.0.0.1:{nginx_port}; root {www}; }}
}}
""")
        procs.append(subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL))
        wait_listening(nginx_port, procs[-1], "nginx")

        urls = {
            "nginx": f"http://127.0.0.1:{nginx_port}/big.bin",
            "shoal_seed": f"http://127.0.0.1:{seed_port}/blobs/{digest}",
            "shoal_edge_warm": f"http://127.0.0.1:{edge_port}/blobs/{digest}",
        }
        t = time.perf_counter()
        cold = curl_mb_s(urls["shoal_edge_warm"])
        cold_s = time.perf_counter() - t
        subprocess.run(
            ["cat", *map(str, (work / "cache").rglob("*.chunk"))],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results: dict[str, dict[str, float]] = {}
        for name, url in urls.items():
            c = [curl_mb_s(url) for _ in range(args.rounds)]
            a = [aria2_mb_s(url, size, work) for _ in range(args.rounds)]
            results[name] = {
                "curl_mb_s": round(statistics.median(c), 1),
                "aria2c_x8_mb_s": round(statistics.median(a), 1),
            }
            print(f"{name}: {results[name]}", file=sys.stderr)
        base = results["nginx"]
        report = {
            "benchmark": "edge and origin HTTP serving",
            "file_bytes": size,
            "chunk_size": pub.manifest.chunk_size,
            "rounds": args.rounds,
            "baseline": "nginx (Debian) serving the same file with sendfile, same run",
            **results,
            "shoal_edge_cold_miss": {"curl_mb_s": round(cold, 1), "seconds": round(cold_s, 2)},
            "ratios_to_nginx": {
                f"{name}_{client}": round(results[name][client] / base[client], 3)
                for name in ("shoal_seed", "shoal_edge_warm")
                for client in ("curl_mb_s", "aria2c_x8_mb_s")
            },
            "goal": "shoal seed and a warm edge >= 0.6x nginx",
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
