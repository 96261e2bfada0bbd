"""Benchmark: one host pulling a model, against curl and aria2c on the same URL.

In the same run, for a generated model (default 2 GiB: one big file and a config):

(a) HTTP: ``shoal pull --edge ORIGIN`` (no coordinator, no LAN discovery: every chunk
    over verified HTTP range requests) vs ``aria2c -x8 -s8`` and ``curl`` fetching the
    big blob from the same ``shoal seed`` URL;
(b) BitTorrent: ``shoal pull --coordinator`` with no edge, from the one libtorrent seed
    of ``shoal seed``, vs the same curl time;

each over a 1 Gbit/s tbf-shaped veth link between two network namespaces (server in one,
client in the other) and over plain loopback. Also the pulling process's peak anonymous
memory (RssAnon; libtorrent maps files, so RSS would count page cache) and the wall time
of a pull of a model already present (a cache hit, the whole CLI; median of 5).

With ``--baseline-rev REV`` both shoal pulls run again with the code of REV (a git
worktree put ahead of the editable install on PYTHONPATH), right after this code's, so a
change's cost is measured in the same run: issue 26 compared the whole-file hash before
a blob is named against the code before it (11082be).

    .venv/bin/python bench/pull.py [--size-mib 2048] [--links shaped,loopback]
        [--baseline-rev REV]

Needs root (ip netns, tc). Writes bench/results/pull.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.coordinator_client import CoordinatorClient  # noqa: E402
from shoal.publishing.publish import PublishOptions, publish  # noqa: E402
from shoal.publishing.sources import directory_source  # noqa: E402
from shoal.ref import ModelRef  # noqa: E402
from shoal.testing import stop_processes, write_blob  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"
NS_SERVER, NS_CLIENT = "shoal-bench-srv", "shoal-bench-cli"
SERVER_IP, CLIENT_IP = "198.18.7.1", "198.18.7.2"
RATE = "1gbit"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@contextmanager
def shaped_link() -> Iterator[None]:
    """Two namespaces joined by a veth pair, each direction shaped to 1 Gbit/s."""
    teardown()
    try:
        sh("ip", "netns", "add", NS_SERVER)
        sh("ip", "netns", "add", NS_CLIENT)
        sh("ip", "link", "add", "shb-srv", "type", "veth", "peer", "name", "shb-cli")
        sh("ip", "link", "set", "shb-srv", "netns", NS_SERVER)
        sh("ip", "link", "set", "shb-cli", "netns", NS_CLIENT)
        for ns, dev, ip in ((NS_SERVER, "shb-srv", SERVER_IP), (NS_CLIENT, "shb-cli", CLIENT_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # tbf needs a burst of at least rate/HZ; 1 MB keeps 1 Gbit/s reachable
            tbf = f"tbf rate {RATE} burst 1mb latency 50ms"
            sh(*f"tc -n {ns} qdisc add dev {dev} root {tbf}".split())
        yield
    finally:
        teardown()


def teardown() -> None:
    for ns in (NS_SERVER, NS_CLIENT):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_ns(ns: str | None, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd


class Peak:
    """Samples a process's RssAnon (kB) every 50 ms; ``peak`` in MB."""

    def __init__(self, pid: int) -> None:
        self.pid, self.kb, self.done = pid, 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        self.kb = max(self.kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    @property
    def peak(self) -> float:
        self.done = True
        self.thread.join()
        return round(self.kb / 1024, 1)


def timed(
    cmd: list[str], *, peak: bool = False, env: dict[str, str] | None = None
) -> tuple[float, float | None]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # the process of interest is the last exec'd: ip netns exec execs, so the pid is it
    sampler = Peak(proc.pid) if peak else None
    _out, err = proc.communicate(timeout=900)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[-6:]} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, sampler.peak if sampler else None


def shoal_of(code: Path | None) -> tuple[list[str], dict[str, str] | None]:
    """The command and environment that run ``shoal`` from ``code`` (None: this checkout)."""
    if code is None:
        return [str(SHOAL)], None
    runner = "import sys; from shoal_cli import main; sys.argv[0] = 'shoal'; main()"
    return [sys.executable, "-c", runner], {**os.environ, "PYTHONPATH": str(code)}


def run_link(
    link: str,
    work: Path,
    size: int,
    pub_out: Path,
    blob_url_path: str,
    baseline: Path | None = None,
) -> dict:
    ns_srv, ns_cli = (NS_SERVER, NS_CLIENT) if link == "shaped" else (None, None)
    srv_ip = SERVER_IP if link == "shaped" else "127.0.0.1"
    cli_ip = CLIENT_IP if link == "shaped" else "127.0.0.1"
    http_port, coord_port, bt_port = 18080, 18470, 16881
    origin = f"http://{srv_ip}:{http_port}"
    coord = f"http://{srv_ip}:{coord_port}"
    procs = [
        subprocess.Popen(
            in_ns(
                ns_srv,
                [
                    str(SHOAL),
                    "tracker",
                    "serve",
                    "--host",
                    srv_ip,
                    "--port",
                    str(coord_port),
                    "--db",
                    str(work / f"coord-{link}" / "r.sqlite"),
                    "--publish-token",
                    "pub",
                    "--fleet-token",
                    "fleet",
                    "--rate-limit",
                    "0",
                ],
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_http(ns_cli, f"{coord}/healthz")
        publish_to(ns_srv, coord, pub_out)  # before the seed's first announce
        procs.append(
            subprocess.Popen(
                in_ns(
                    ns_srv,
                    [
                        str(SHOAL),
                        "seed",
                        str(pub_out),
                        "--host",
                        srv_ip,
                        "--port",
                        str(http_port),
                        "--bt-listen",
                        f"{srv_ip}:{bt_port}",
                    ],
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_http(ns_cli, f"{origin}/healthz")
        out: dict = {"link": link}
        dl = work / "dl"

        def fresh() -> Path:
            shutil.rmtree(dl, ignore_errors=True)
            dl.mkdir()
            return dl

        url = origin + blob_url_path
        out["curl_s"], _ = timed(in_ns(ns_cli, ["curl", "-sf", "-o", str(fresh() / "f"), url]))
        out["aria2c_s"], _ = timed(
            in_ns(
                ns_cli,
                [
                    "aria2c",
                    "-q",
                    "-x8",
                    "-s8",
                    "--min-split-size=16M",
                    "--file-allocation=none",
                    f"--dir={fresh()}",
                    "-o",
                    "f",
                    url,
                ],
            )
        )

        def shoal_pull(code: Path | None, *source: str) -> tuple[float, float | None]:
            cmd, env = shoal_of(code)
            return timed(
                in_ns(
                    ns_cli,
                    [
                        *cmd,
                        *("pull", "bench:v1", *source, "--no-lsd", "--host", cli_ip),
                        *("--models-dir", str(fresh() / "models"), "--json"),
                    ],
                ),
                peak=True,
                env=env,
            )

        def http_pull(code: Path | None) -> tuple[float, float | None]:
            return shoal_pull(code, "--edge", origin)

        def bt_pull(code: Path | None) -> tuple[float, float | None]:
            return shoal_pull(code, "--coordinator", coord, "--token", "fleet")

        if baseline is not None:
            out["baseline_http_s"], _ = http_pull(baseline)
            out["baseline_bt_s"], _ = bt_pull(baseline)
        out["shoal_http_s"], out["shoal_http_rss_anon_mb"] = http_pull(None)
        models = dl / "models"
        hits = sorted(
            timed(
                in_ns(
                    ns_cli,
                    [
                        str(SHOAL),
                        "pull",
                        "bench:v1",
                        "--edge",
                        origin,
                        "--models-dir",
                        str(models),
                        "--json",
                    ],
                )
            )[0]
            for _ in range(5)
        )
        out["cache_hit_s"], out["cache_hit_all_s"] = hits[2], [round(h, 3) for h in hits]
        out["shoal_bt_s"], out["shoal_bt_rss_anon_mb"] = bt_pull(None)
        if baseline is not None:
            out["http_vs_baseline"] = round(out["shoal_http_s"] / out["baseline_http_s"], 3)
            out["bt_vs_baseline"] = round(out["shoal_bt_s"] / out["baseline_bt_s"], 3)
        shutil.rmtree(dl, ignore_errors=True)
        out["http_vs_aria2c"] = round(out["aria2c_s"] / out["shoal_http_s"], 3)
        out["http_vs_curl"] = round(out["curl_s"] / out["shoal_http_s"], 3)
        out["bt_vs_curl"] = round(out["curl_s"] / out["shoal_bt_s"], 3)
        out["shoal_http_MB_s"] = round(size / out["shoal_http_s"] / 1e6, 1)
        out["shoal_bt_MB_s"] = round(size / out["shoal_bt_s"] / 1e6, 1)
        out["curl_MB_s"] = round(size / out["curl_s"] / 1e6, 1)
        for k, v in list(out.items()):
            if k.endswith("_s") and isinstance(v, float):
                out[k] = round(v, 3)
        return out
    finally:
        stop_processes(procs)


def wait_http(ns: str | None, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = subprocess.run(in_ns(ns, ["curl", "-sf", "-o", "/dev/null", url]))
        if r.returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def publish_to(ns: str | None, coord: str, pub_out: Path) -> None:
    from shoal.manifest import Manifest

    manifest = Manifest.load((pub_out / "manifest.msgpack").read_bytes())
    torrent = next(pub_out.glob("*.torrent")).read_bytes()
    if ns is None:
        with CoordinatorClient(coord, "pub") as c:
            c.publish(manifest, torrent)
        return
    script = (
        f"import sys; from pathlib import Path; sys.path.insert(0, {str(ROOT)!r});"
        "from shoal.coordinator_client import CoordinatorClient;"
        "from shoal.manifest import Manifest;"
        f"p = Path({str(pub_out)!r}); m = Manifest.load((p / 'manifest.msgpack').read_bytes());"
        f"CoordinatorClient({coord!r}, 'pub').publish(m, next(p.glob('*.torrent')).read_bytes())"
    )
    sh(*in_ns(ns, [sys.executable, "-c", script]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--links", default="shaped,loopback")
    ap.add_argument("--baseline-rev", default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/pull.py needs root (network namespaces and tc)")
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "results") as tmp:
        work = Path(tmp)
        src = work / "src"
        big = args.size_mib * 1024 * 1024 - 4096
        write_blob(src / "model.gguf", big, 1)
        write_blob(src / "config.json", 4096, 2)
        # one published copy per link, its torrent naming that link's coordinator as
        # tracker (a seed whose first tracker is unreachable is found seconds later)
        pubs = {
            link: publish(
                directory_source(src),
                PublishOptions(
                    ref=ModelRef.parse("bench:v1"),
                    out=work / f"pub-{link}",
                    trackers=[
                        f"http://{SERVER_IP if link == 'shaped' else '127.0.0.1'}:18470/announce"
                    ],
                ),
            )
            for link in args.links.split(",")
        }
        pub = next(iter(pubs.values()))
        entry = next(f for f in pub.manifest.files if f.path.value == "model.gguf")
        results: dict = {
            "size_bytes": pub.manifest.total_size,
            "chunk_size": pub.manifest.chunk_size,
            "cpus": os.cpu_count(),
            "runs": [],
        }
        baseline = None
        if args.baseline_rev:
            baseline = work / "baseline"
            sh(
                "git",
                "-C",
                str(ROOT),
                "worktree",
                "add",
                "--detach",
                str(baseline),
                args.baseline_rev,
            )
            results["baseline_rev"] = args.baseline_rev
        try:
            for link in args.links.split(","):
                path = f"/blobs/{entry.sha256}"
                if link == "shaped":
                    with shaped_link():
                        r = run_link(link, work, big, pubs[link].out, path, baseline)
                else:
                    r = run_link(link, work, big, pubs[link].out, path, baseline)
                print(json.dumps(r), flush=True)
                results["runs"].append(r)
        finally:
            if baseline is not None:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                    capture_output=True,
                )
    out = ROOT / "bench" / "results" / "pull.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
