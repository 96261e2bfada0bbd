"""Fixture builders for tests, benchmarks and the demo: sample models and ollama stores.

Deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.chunking import chunk_count
from shoal.digest import Digest
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef
from shoal.relpath import RelPath

SAMPLE_MODEL = {
    "model.gguf": 48 << 20,
    "tokenizer/tokenizer.json": 700_000,
    "tokenizer/special_tokens.txt": 0,
    "config.json": 1_234,
}


def blob_fixture(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def write_blob(path: Path, size: int, seed: int = 0, block: int = 8 << 20) -> Path:
    """Write ``size`` deterministic bytes to ``path`` without holding them all in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with path.open("wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(rng.randbytes(n))
            left -= n
    return path


def write_model_dir(root: Path, files: Mapping[str, int] = SAMPLE_MODEL, seed: int = 0) -> Path:
    """A model directory with files of the given relative paths and sizes."""
    for i, (rel, size) in enumerate(sorted(files.items())):
        write_blob(root / rel, size, seed * 1_000_003 + i)
    return root


def write_ollama_store(
    models: Path,
    name: str,
    layers: Sequence[tuple[str, bytes]],
    config: bytes = b'{"model_format":"gguf","model_family":"llama"}',
) -> dict[str, object]:
    """Write ollama's real layout: blobs by digest and the manifest JSON for ``name``.

    ``layers`` are (media type, content). Returns the manifest document.
    """
    ref = ModelRef.parse(name)
    blobs = models / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = Digest.of(data)
        (blobs / digest.filename).write_bytes(data)
        return str(digest)

    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": put(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": media, "digest": put(data), "size": len(data)} for media, data in layers
        ],
    }
    path = models / "manifests" / ref.ollama_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return doc


def manifest_fixture(
    files: Mapping[str, bytes],
    ref: str = "demo:latest",
    chunk_size: int = 16 * 1024,
    media_types: Mapping[str, str] | None = None,
) -> Manifest:
    """A valid manifest over in-memory files (info-hashes are placeholders derived
    from the content, not from a real torrent)."""
    entries = []
    for rel in sorted(files, key=lambda p: RelPath(p).sort_key):
        data = files[rel]
        chunks = b"".join(
            hashlib.sha256(data[i * chunk_size : (i + 1) * chunk_size]).digest()
            for i in range(chunk_count(len(data), chunk_size))
        )
        entries.append(
            FileEntry(
                RelPath(rel), len(data), Digest.of(data), (media_types or {}).get(rel), chunks
            )
        )
    seed = hashlib.sha256(b"".join(e.sha256.raw for e in entries)).digest()
    return Manifest(
        ref=ModelRef.parse(ref),
        chunk_size=chunk_size,
        files=tuple(entries),
        info_hash_v1=seed[:20],
        info_hash_v2=seed,
    )


class ServerThread:
    """A real uvicorn server on a free loopback port, in a thread (for tests).

    Use as a context manager; ``url`` is its base URL once entered.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        self._config = uvicorn.Config(
            app,
            host=host,
            port=0,
            lifespan="on",
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # as shoal tracker serve without trusted proxies
        )
        self.server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=20)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for processes that need a fixed port)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: Any = None, what: str = "server", timeout: float = 30) -> None:
    """Poll until something accepts TCP connections on 127.0.0.1:``port``.

    Raises ``RuntimeError`` if ``proc`` (a ``subprocess.Popen``) exits first or time runs out.
    """
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read() if getattr(proc, "stderr", None) else ""
                raise RuntimeError(f"{what} exited with {proc.returncode}: {err}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on port {port}") from None
            time.sleep(0.05)


def stop_processes(procs: list[Any], timeout: float = 10) -> None:
    """SIGTERM each ``subprocess.Popen``, then SIGKILL whatever has not exited in time."""
    import subprocess

    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)


def start_local_seed(
    shoal: Path, dirs: Sequence[Path], port: int, bt_port: int, *extra: str, stderr: Any = None
) -> Any:
    """``shoal seed DIRS`` on 127.0.0.1 (HTTP ``port``, BitTorrent ``bt_port``), returned
    once it listens (a ``subprocess.Popen``; ``stderr`` as Popen takes it)."""
    import subprocess

    proc = subprocess.Popen(
        [
            *(str(shoal), "seed", *map(str, dirs), "--host", "127.0.0.1", "--port", str(port)),
            *("--bt-listen", f"127.0.0.1:{bt_port}", *extra),
        ],
        stderr=stderr,
        text=True,
    )
    try:
        wait_listening(port, proc, "shoal seed")
    except RuntimeError:
        stop_processes([proc])
        raise
    return proc
