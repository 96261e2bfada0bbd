"""Debian's ``docker-registry`` (distribution 2.8.2) as a real upstream registry: started
on a free loopback port with its own storage, models pushed through the registry API as
ollama pushes them, and its access log read back (what it sent, per blob)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shoal.digest import Digest
from shoal.testing import free_port, stop_processes, wait_listening

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
_ACCESS = re.compile(r'"(GET|HEAD) (\S+) HTTP/1\.1" (\d{3}) (\d+)')


def available() -> bool:
    return shutil.which("docker-registry") is not None


@dataclass
class UpstreamRegistry:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "access.log"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, formatter: text, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}}}\n"
            f"http: {{addr: '127.0.0.1:{self.port}'}}\n"
        )
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=out, stderr=out
        )
        wait_listening(self.port, self.proc, "docker-registry")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc])
            self.proc = None

    def push(self, name: str, tag: str, layers: list[tuple[str, bytes]], config: bytes) -> bytes:
        """Push an ollama-format model; returns the manifest bytes the registry holds."""
        with httpx.Client(base_url=self.url, timeout=60) as c:

            def put(data: bytes) -> str:
                digest = str(Digest.of(data))
                r = c.post(f"/v2/{name}/blobs/uploads/")
                assert r.status_code == 202, r.text
                location = r.headers["location"]  # holds a query of its own: add to it
                sep = "&" if "?" in location else "?"
                r = c.put(f"{location}{sep}digest={digest}", content=data)
                assert r.status_code == 201, r.text
                return digest

            doc = {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": CONFIG_TYPE, "digest": put(config), "size": len(config)},
                "layers": [
                    {"mediaType": m, "digest": put(data), "size": len(data)} for m, data in layers
                ],
            }
            raw = json.dumps(doc, indent=3).encode()  # as ollama writes it: not compact
            r = c.put(
                f"/v2/{name}/manifests/{tag}",
                content=raw,
                headers={"Content-Type": DOCKER_MANIFEST},
            )
            assert r.status_code == 201, r.text
            got = c.get(f"/v2/{name}/manifests/{tag}", headers={"Accept": DOCKER_MANIFEST})
            assert got.content == raw
            return raw

    def sent(self, path_part: str) -> tuple[int, int]:
        """GET requests whose path holds ``path_part``, and the body bytes they were sent."""
        count = total = 0
        for method, path, _status, size in _ACCESS.findall(self.log.read_text(errors="replace")):
            if method == "GET" and path_part in path:
                count += 1
                total += int(size)
        return count, total
