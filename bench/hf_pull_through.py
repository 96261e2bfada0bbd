"""Benchmark: a Hugging Face repo the fleet has never seen, asked for at once by N hosts'
own ``snapshot_download`` (the real huggingface_hub, ``endpoint=`` each agent's mirror),
is fetched from its upstream once.

Upstream: the Hub-compatible server of the tests (tests/seeder/hub_upstream.py) holding a
repo of one LFS file of ``--size-mib`` and a few small files, behind a relay that caps it
at ``--upstream-rate`` in all (an internet link; the fleet's own links are loopback).
Fleet: a coordinator, an origin with ``--hf-upstream`` (HTTP only) and N agents.

Baseline, in the same run: one host's ``snapshot_download`` straight from the same
upstream through the same relay (Xet off: the upstream's Xet hints lead nowhere here),
what each host does alone today. Figures: upstream bytes / repo size (goal 1.00), the
fleet's time for N hosts over the baseline's time for one.

    .venv/bin/python bench/hf_pull_through.py [--size-mib 256] [--hosts 3,8]
        [--upstream-rate 50M]

Writes bench/results/hf_pull_through.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pull_through import Relay, start_fleet  # noqa: E402
from shoal.testing import ServerThread, stop_processes  # noqa: E402
from shoal.units import parse_size  # noqa: E402
from tests.seeder.hub_upstream import HubUpstream  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"
REPO = "acme/bench"
ALONE = """
import sys, time
from huggingface_hub import snapshot_download
start = time.monotonic()
snapshot_download(sys.argv[1], endpoint=sys.argv[2], cache_dir=sys.argv[3])
print(time.monotonic() - start)
"""


def files(size: int) -> dict[str, bytes]:
    return {
        "model.safetensors": os.urandom(size),
        "config.json": b'{"model_type": "llama"}',
        "tokenizer/tokenizer.json": b'{"version": "1.0"}' * 100,
        "README.md": b"# bench\n",
    }


def one_alone(url: str, cache: Path) -> float:
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    out = subprocess.run(
        [sys.executable, "-c", ALONE, REPO, url, str(cache)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"snapshot_download from {url} failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def fleet_run(tmp: Path, size: int, hosts: int, rate: int) -> dict[str, object]:
    hub = HubUpstream(tree_page=1000)
    repo = hub.add(REPO, files(size))
    repo_bytes = sum(len(d) for d in repo.files.values())
    procs: list[subprocess.Popen[bytes]] = []
    with ServerThread(hub) as server, Relay(int(server.url.rsplit(":", 1)[1]), rate) as relay:
        relay_url = f"http://127.0.0.1:{relay.port}"
        hub.data_url = f"http://127.0.0.2:{relay.port}"  # another host, the same link
        try:
            alone = one_alone(relay_url, tmp / "alone")
            hub.sent.clear()
            _, mirrors = start_fleet(
                tmp, hosts, ["--hf-upstream", relay_url, "--hf-allow", "acme/*"], procs
            )
            start = time.monotonic()
            with ThreadPoolExecutor(hosts) as pool:
                pulls = [
                    pool.submit(one_alone, m, tmp / f"cache{i}") for i, m in enumerate(mirrors)
                ]
                each = [p.result(timeout=1800) for p in pulls]
            took = time.monotonic() - start
        finally:
            stop_processes(procs)
    fetched = sum(hub.sent.values())
    return {
        "hosts": hosts,
        "repo_bytes": repo_bytes,
        "upstream_bytes_logged": fetched,
        "upstream_over_repo": round(fetched / repo_bytes, 4),
        "one_host_alone_s": round(alone, 2),
        "fleet_s": round(took, 2),
        "fleet_over_one_alone": round(took / alone, 3),
        "snapshot_download_s": sorted(round(x, 2) for x in each),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--hosts", default="3,8")
    ap.add_argument("--upstream-rate", default="50M")
    a = ap.parse_args()
    rate = parse_size(a.upstream_rate)
    runs = []
    for n in (int(x) for x in a.hosts.split(",")):
        with tempfile.TemporaryDirectory(prefix="shoal-hf-") as tmp:
            runs.append(fleet_run(Path(tmp), a.size_mib << 20, n, rate))
            print(json.dumps(runs[-1]), flush=True)
    out = {"size_mib": a.size_mib, "upstream_rate": a.upstream_rate, "runs": runs}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "hf_pull_through.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
