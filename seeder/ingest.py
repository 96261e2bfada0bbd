"""Pull-through on the origin: a model the fleet asked for is fetched from its upstream
registry, checked, published and served like any other (``shoal seed --upstream``).

The origin holds the fleet's one copy and is the component with upstream access, so it
ingests: the coordinator queues each reference once (tracker/ingest.py), this origin
claims it, fetches the manifest and its blobs into an ollama-layout store under
``--ingest-dir`` (each blob renamed into place only after it hashed to its digest), checks
that the tag still names the same manifest, publishes it (hard links, no copy), starts
serving and seeding it, and hands the model to the coordinator, which registers it under
the reference claimed. A failed fetch keeps what it wrote; the next attempt resumes it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from seeder.catalog import load_model
from seeder.ollama import ollama_source
from seeder.publish import Published, PublishOptions, publish
from seeder.registry_client import RegistryClient
from shoal import ollama_manifest as om
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import BadInput, IntegrityError, NotFound, ShoalError, SourceError
from shoal.fsutil import atomic_write
from shoal.ref import DEFAULT_HOST, ModelRef
from shoal.urls import check_url

log = logging.getLogger("shoal.ingest")

MAX_BLOBS = 1000
MAX_BLOB = 1 << 40
CLAIM_WAIT = 5.0  # a long poll in a thread: a stopping origin waits for it
RENEW_EVERY = 15.0


@dataclass(frozen=True, slots=True)
class Upstream:
    """A registry host as references name it, and the URL it is fetched from."""

    host: str
    url: str

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """``URL`` (its own host) or ``HOST=URL`` (references to HOST fetched from URL,
        e.g. ``registry.ollama.ai=http://mirror.internal:5000``)."""
        host, eq, url = text.partition("=")
        if not eq:
            host, url = "", text
        check_url(url, "upstream registry")
        if not host:
            netloc = urlsplit(url).netloc
            host = DEFAULT_HOST if netloc == "registry.ollama.ai" else netloc
        ModelRef(host, "library", "x", "latest")  # a host references can name
        return cls(host, url.rstrip("/"))


@dataclass
class IngestSettings:
    upstreams: tuple[Upstream, ...]
    work: Path  # the ollama-layout store and the published models
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)  # by host
    proxy: str | None = None
    parts: int = 4


def read_credentials(path: Path) -> dict[str, tuple[str, str]]:
    """``HOST USER:PASSWORD`` per line (``#`` starts a comment)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read upstream credentials {path}: {exc.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, pair = line.partition(" ")
        user, colon, password = pair.strip().partition(":")
        if not host or not colon or not user:
            raise BadInput(f"{path}:{n}: expected HOST USER:PASSWORD")
        out[host] = (user, password)
    return out


def ingest(
    ref: ModelRef, settings: IngestSettings, progress: Callable[[int], None] | None = None
) -> Published:
    """Fetch ``ref`` from its upstream and publish it; returns the published model."""
    up = next((u for u in settings.upstreams if u.host == ref.host), None)
    if up is None:
        raise NotFound(f"no upstream registry configured for {ref.host}")
    name, store = f"{ref.namespace}/{ref.name}", settings.work / "ollama"
    client = RegistryClient(up.url, settings.credentials.get(ref.host), settings.proxy)
    try:
        raw, digest = client.manifest(name, ref.tag)
        out = settings.work / "published" / f"{ref.slug}-{digest.hex[:12]}"
        held = _published(out, ref)
        if held is not None:  # the tag still names what was ingested: nothing to fetch
            return held
        try:
            doc = om.parse(raw, f"of {ref} from {up.url}")
            if om.is_list(doc):
                raise SourceError(f"{ref} is a manifest list; shoal ingests plain manifests")
            blobs = om.blobs(doc, f"of {ref} from {up.url}")
        except BadInput as exc:
            raise IntegrityError(f"the upstream manifest of {ref}: {exc.message}") from None
        if len(blobs) > MAX_BLOBS or any(b.size > MAX_BLOB for b in blobs):
            raise IntegrityError(f"the upstream manifest of {ref} names too many or too big blobs")
        for b in blobs:
            dest = store / "blobs" / b.digest.filename
            if dest.exists() and dest.stat().st_size == b.size:
                continue  # renamed there only after it was hashed
            client.blob(name, b.digest, b.size, dest, settings.parts, progress)
        _, now = client.manifest(name, ref.tag)
        if now != digest:
            raise IntegrityError(
                f"the tag {ref} moved upstream during the ingest ({digest} then {now})",
                "nothing was published; ask again to ingest what it names now",
            )
    finally:
        client.close()
    atomic_write(store / "manifests" / ref.ollama_path, raw)
    if out.exists():
        shutil.rmtree(out)  # an attempt that stopped after publishing: published anew
    return publish(ollama_source(str(ref), store), PublishOptions(ref=ref, out=out))


def _published(out: Path, ref: ModelRef) -> Published | None:
    """The model published at ``out`` by an earlier ingest of ``ref``, if it is whole."""
    try:
        model = load_model(out)
    except (ShoalError, OSError):
        return None
    if model.manifest.ref != ref:
        return None
    torrent = next(out.glob("*.torrent"))
    return Published(out, model.manifest, torrent, 0)


async def work_forever(
    coordinator: CoordinatorClient,
    settings: IngestSettings,
    serve: Callable[[Path], None],
    counted: Callable[[int], None] = lambda _: None,
    ended: Callable[[str], None] = lambda _: None,
) -> None:
    """Claim ingests from the coordinator and do them, one at a time, until cancelled.
    ``serve`` starts serving a published directory (catalog and BitTorrent); ``counted``
    is told the bytes fetched from upstream, ``ended`` each ingest's result."""
    hosts = sorted({u.host for u in settings.upstreams})
    while True:
        try:
            item = await asyncio.to_thread(coordinator.claim_ingest, hosts, CLAIM_WAIT)
        except ShoalError as exc:
            log.warning("cannot ask the coordinator for ingests: %s", exc)
            await asyncio.sleep(5)
            continue
        if item is None:
            continue
        ref = ModelRef.parse(str(item["ref"]))
        ended(await _one(coordinator, settings, ref, serve, counted))


async def _one(
    coordinator: CoordinatorClient,
    settings: IngestSettings,
    ref: ModelRef,
    serve: Callable[[Path], None],
    counted: Callable[[int], None],
) -> str:
    """One ingest, start to end; returns "done", "failed" or "refused" (the coordinator
    did not take the model)."""
    fetched = [0]

    def count(n: int) -> None:
        fetched[0] += n
        counted(n)

    async def renew() -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            body = {"state": "running", "progress": {"fetched": fetched[0]}}
            try:
                await asyncio.to_thread(coordinator.update_ingest, ref, body)
            except ShoalError as exc:
                log.warning("cannot renew the ingest of %s: %s", ref, exc)

    log.info("ingesting %s from upstream", ref)
    renewing = asyncio.ensure_future(renew())
    try:
        pub = await asyncio.to_thread(ingest, ref, settings, count)
    except ShoalError as exc:
        log.warning("ingest of %s failed: %s", ref, exc)
        body = {"state": "failed", "error": str(exc), "missing": isinstance(exc, NotFound)}
        await _tell(coordinator, ref, body)
        return "failed"
    finally:
        renewing.cancel()
    serve(pub.out)
    body = {
        "state": "done",
        "manifest": pub.manifest.canonical_bytes,
        "torrent": pub.torrent_path.read_bytes(),
    }
    if not await _tell(coordinator, ref, body):
        return "refused"
    log.info("ingested %s (%d bytes from upstream)", ref, fetched[0])
    return "done"


async def _tell(coordinator: CoordinatorClient, ref: ModelRef, body: dict[str, object]) -> bool:
    try:
        await asyncio.to_thread(coordinator.update_ingest, ref, body)
        return True
    except ShoalError as exc:
        log.warning("the coordinator did not take the ingest of %s: %s", ref, exc)
        return False
