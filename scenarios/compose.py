"""``scenarios/compose-run``: the compose fleet, run here end to end.

Debian's dockerd is started inside a network namespace of its own (``shl-docker``, so
``shoal sim clean`` finds it too): the machine's own network sees no docker link, and the
namespace holding docker's bridges has no uplink. A base image comes from debootstrap and
``docker import``; shoal goes in from wheels built on the host (``docker build --network
none``). Then ``docker-compose up --scale peer=N``, every peer pulls at once (``shoal pull``
in each container, through its agent), the same JSON as the netns runner is written, and
everything is torn down: containers, the images made, dockerd, the namespace.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from scenarios.demo import HostRun, follow
from scenarios.netns import (
    FleetLock,
    NetnsError,
    call_in,
    clean_leftovers,
    require_root,
    run_ip,
)
from shoal.errors import ShoalError
from shoal.units import parse_size

ROOT = Path(__file__).resolve().parent.parent
NS = "shl-docker"
RUN = Path("/run/shl-docker")
SOCK = RUN / "docker.sock"
BASE_TAG, IMAGE_TAG = "shoal-base:bookworm", "shoal:local"
PROJECT = "shoalsim"
ORIGIN = "http://198.19.7.3:8471"
STORE = "/var/lib/shoal"  # each peer container's models dir (docker-compose.yml)


def marker_wheels(wheels: Path, python: str) -> list[str]:
    """Requirements of the wheels in ``wheels`` that only ``python`` (the image's, e.g.
    3.11.2) needs, by their markers, and that no wheel there provides yet: pip resolved
    them for the host's interpreter."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {"python_full_version": python, "python_version": ".".join(python.split(".")[:2])}
    have = {canonicalize_name(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
    wanted = set()
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            for line in z.read(meta).decode().splitlines():
                if not line.startswith("Requires-Dist:"):
                    continue
                req = Requirement(line.split(":", 1)[1].strip())
                marker = req.marker
                if marker is None or "extra" in str(marker) or not marker.evaluate(env):
                    continue
                if canonicalize_name(req.name) not in have:
                    wanted.add(f"{req.name}{req.specifier}")
    return sorted(wanted)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (debootstrap needs one)."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            m = re.match(r"URIs:\s*(\S+/debian)/?\s*$", line)
            if m:
                return m.group(1)
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        m = re.match(r"deb\s+(\S+/debian)/?\s+\S+\s+main", line)
        if m:
            return m.group(1)
    raise ShoalError("no Debian mirror in /etc/apt", "configure apt, or build the base image")


class Compose:
    def __init__(self, out: Path, peers: int, model_size: str) -> None:
        self.out = out
        self.peers = peers
        self.model_size = model_size
        self.env = {"DOCKER_HOST": f"unix://{SOCK}", "MODEL_SIZE": model_size, "PATH": _path()}
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.timings: dict[str, float] = {}

    def sh(self, *argv: str, timeout: float = 600) -> str:
        r = subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=timeout, cwd=ROOT
        )
        if r.returncode != 0:
            raise ShoalError(f"{' '.join(argv[:3])} failed: {r.stderr.strip()[-600:]}")
        return r.stdout

    def start_dockerd(self) -> None:
        clean_leftovers([NS])  # a crashed run's dockerd and namespace
        run_ip("netns", "add", NS)
        run_ip("netns", "exec", NS, "ip", "link", "set", "lo", "up")
        RUN.mkdir(parents=True, exist_ok=True)
        log = (self.out / "dockerd.log").open("ab")
        # nsenter, not `ip netns exec`: that remounts /sys and dockerd finds no cgroups
        self.dockerd = subprocess.Popen(
            [
                *("nsenter", f"--net=/run/netns/{NS}", "dockerd"),
                *("--iptables=false", "--ip6tables=false", "--bip", "198.18.254.1/24"),
                *("--default-address-pool", "base=198.19.0.0/16,size=24"),
                *("--data-root", str(self.out / "docker-data"), "--exec-root", str(RUN / "exec")),
                *("--pidfile", str(RUN / "docker.pid"), "-H", f"unix://{SOCK}"),
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "info"], capture_output=True, env=self.env).returncode:
            if self.dockerd.poll() is not None or time.monotonic() > deadline:
                raise ShoalError("dockerd did not start", f"see {self.out / 'dockerd.log'}")
            time.sleep(0.5)

    def build(self) -> None:
        base = self.out / "base-bookworm.tar"
        started = time.monotonic()
        if not base.exists():  # kept between runs: debootstrap is the slow part
            root = self.out / "rootfs"
            shutil.rmtree(root, ignore_errors=True)
            self.sh(
                *("debootstrap", "--variant=minbase", "--include=python3,python3-venv"),
                *("bookworm", str(root), debian_mirror()),
                timeout=900,
            )
            self.sh("tar", "-C", str(root), "-cf", str(base), ".", timeout=300)
            shutil.rmtree(root, ignore_errors=True)
        self.sh("docker", "import", str(base), BASE_TAG, timeout=300)
        self.timings["base_image_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        ctx = self.out / "context"
        shutil.rmtree(ctx, ignore_errors=True)
        (ctx / "wheels").mkdir(parents=True)
        pip = str(Path(sys.executable).parent / "pip")
        self.sh(pip, "wheel", "--quiet", "--wheel-dir", str(ctx / "wheels"), str(ROOT), timeout=900)
        target = self.sh(
            *("docker", "run", "--rm", "--network", "none", BASE_TAG),
            *("python3", "-c", "import platform; print(platform.python_version())"),
        ).strip()
        for _ in range(5):  # their own requirements may need more
            extra = marker_wheels(ctx / "wheels", target)  # e.g. redis's on 3.11.2
            if not extra:
                break
            self.sh(
                *(pip, "download", "--quiet", "--no-deps", "--only-binary=:all:"),
                *("--dest", str(ctx / "wheels"), *extra),
                timeout=300,
            )
        shutil.copy(ROOT / "docker" / "Dockerfile", ctx / "Dockerfile")
        self.sh("docker", "build", "--network", "none", "-t", IMAGE_TAG, str(ctx), timeout=900)
        self.timings["shoal_image_s"] = round(time.monotonic() - started, 1)

    def up(self) -> None:
        started = time.monotonic()
        self.sh(
            *("docker-compose", "-p", PROJECT, "up", "-d", "--scale", f"peer={self.peers}"),
            timeout=300,
        )

        def registered() -> bool:
            try:
                r = httpx.get("http://198.19.7.2:8470/v1/edges", timeout=2)
                return r.status_code == 200 and len(r.content) > 0 and b"8472" in r.content
            except httpx.HTTPError:
                return False

        deadline = time.monotonic() + 120
        while not call_in(NS, registered):
            if time.monotonic() > deadline:
                raise ShoalError("the compose fleet did not come up", "docker-compose logs")
            time.sleep(0.5)
        self.timings["fleet_up_s"] = round(time.monotonic() - started, 1)

    def flash_crowd(self) -> dict[str, Any]:
        runs = [HostRun(f"peer{i}", Path(STORE)) for i in range(1, self.peers + 1)]
        time.sleep(3.0)  # agents write agent.json once their API serves
        started = time.monotonic()
        threads = []
        for i, h in enumerate(runs, start=1):
            proc = subprocess.Popen(
                [
                    *("docker-compose", "-p", PROJECT, "exec", "-T", "--index", str(i), "peer"),
                    *("shoal", "pull", "demo:latest", "--models-dir", STORE, "--json"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
                cwd=ROOT,
            )
            t = threading.Thread(target=follow, args=(h, proc, started), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(600)
        failed = [f"{h.name}: {h.error}" for h in runs if h.result is None]
        if failed:
            raise ShoalError(f"pulls failed: {'; '.join(failed)}")
        served = call_in(NS, lambda: httpx.get(f"{ORIGIN}/metrics", timeout=5).text)
        egress = sum(
            float(line.rsplit(" ", 1)[1])
            for line in served.splitlines()
            if line.startswith("shoal_origin_bytes_served_total")
        )
        size = parse_size(self.model_size)
        for h in runs:
            h.account(lambda url: url.endswith(":8472"), ORIGIN)
        hosts = [h.row() for h in runs]
        return {
            "fleet": "docker-compose",
            "model_bytes": size,
            # the compose network is not shaped: there is no bound to compare with
            "t_min_s": None,
            "http_only_bound_s": None,
            "timings": self.timings,
            "systems": {
                "shoal": {
                    "last_s": max(float(h["done_s"]) for h in hosts),
                    "origin_egress_over_f": round(egress / size, 3),
                    "hosts": hosts,
                }
            },
        }

    def teardown(self) -> None:
        if self.dockerd is not None and self.dockerd.poll() is None:
            for argv in (
                ("docker-compose", "-p", PROJECT, "down", "-v", "--remove-orphans"),
                ("docker", "rmi", "-f", IMAGE_TAG, BASE_TAG),
            ):
                subprocess.run(argv, capture_output=True, env=self.env, cwd=ROOT, timeout=300)
            self.dockerd.terminate()
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
        clean_leftovers([NS])
        shutil.rmtree(self.out / "docker-data", ignore_errors=True)
        shutil.rmtree(self.out / "context", ignore_errors=True)


def _path() -> str:
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def main() -> None:
    ap = argparse.ArgumentParser(description="run the compose fleet here, end to end")
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--model-size", default="64MiB")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "compose")
    args = ap.parse_args()
    try:
        require_root()
        for tool in ("dockerd", "docker-compose", "debootstrap"):
            if shutil.which(tool, path=_path()) is None:
                raise ShoalError(
                    f"{tool} is not installed",
                    "apt-get install docker.io docker-compose debootstrap",
                )
    except (ShoalError, NetnsError) as exc:
        print(f"compose-run: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""))
        raise SystemExit(2) from None
    args.out.mkdir(parents=True, exist_ok=True)
    c = Compose(args.out, args.peers, args.model_size)
    started = time.monotonic()
    lock = FleetLock()  # `shoal sim run` would take shl-docker for a leftover
    try:
        lock.acquire()
        c.start_dockerd()
        c.build()
        c.up()
        result = c.flash_crowd()
    except ShoalError as exc:
        print(f"compose-run: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""))
        raise SystemExit(1) from None
    finally:
        if lock.held:
            c.teardown()
        lock.release()
    result["timings"]["total_s"] = round(time.monotonic() - started, 1)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    s = result["systems"]["shoal"]
    print(
        f"compose fleet: {args.peers} peers pulled {args.model_size} in {s['last_s']:.1f} s, "
        f"origin sent {s['origin_egress_over_f']:.2f} copies; timings {result['timings']}"
    )


if __name__ == "__main__":
    main()
