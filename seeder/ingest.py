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
from pathlib import Path
from typing import TYPE_CHECKING

from seeder.catalog import load_model
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import NotFound, ShoalError
from shoal.hfrepo import HfRepo
from shoal.publishing.ollama import ollama_source
from shoal.publishing.publish import Published, PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.upstream import hub
from shoal.upstream.fetch import Fetch, UpstreamSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger("shoal.ingest")

CLAIM_WAIT = 5.0  # a long poll in a thread: a stopping origin waits for it
RENEW_EVERY = 15.0


def ingest(
    ref: ModelRef,
    settings: UpstreamSettings,
    progress: Callable[[int], None] | None = None,
    signer: Ed25519PrivateKey | None = None,
) -> Published:
    """Fetch ``ref`` from its upstream and publish it (signed by ``signer``, if given);
    returns the published model."""
    repo = HfRepo.of_ref(ref)
    if repo is not None:
        return _ingest_hf(repo, ref.tag, settings, progress, signer)
    with Fetch(ref, settings) as fetch:
        raw, digest = fetch.manifest()
        out = settings.work / "published" / f"{ref.slug}-{digest.hex[:12]}"
        held = _published(out, ref)
        if held is not None:  # the tag still names what was ingested: nothing to fetch
            return held
        fetch.blobs(raw, digest, progress)
    if out.exists():
        shutil.rmtree(out)  # an attempt that stopped after publishing: published anew
    opts = PublishOptions(ref=ref, out=out, signer=signer)
    return publish(ollama_source(str(ref), settings.store), opts)


def _ingest_hf(
    repo: HfRepo,
    revision: str,
    settings: UpstreamSettings,
    progress: Callable[[int], None] | None,
    signer: Ed25519PrivateKey | None,
) -> Published:
    """A Hugging Face repo at ``revision``, published under its commit's reference (a
    branch is registered as that model too, by the coordinator)."""
    if settings.hub is None:
        raise NotFound(f"no Hugging Face endpoint configured for {repo.id}")
    fetched = hub.fetch(repo, revision, settings.hub, progress)
    ref = repo.ref(fetched.snapshot.name)
    out = settings.work / "published" / f"{repo.cache_dir}-{fetched.snapshot.name[:12]}"
    held = _published(out, ref)
    if held is not None:
        return held
    if out.exists():
        shutil.rmtree(out)
    source = directory_source(fetched.snapshot, hf_revision_file=fetched.revision)
    return publish(source, PublishOptions(ref=ref, out=out, signer=signer))


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
    settings: UpstreamSettings,
    serve: Callable[[Path], None],
    counted: Callable[[int], None] = lambda _: None,
    ended: Callable[[str], None] = lambda _: None,
    signer: Ed25519PrivateKey | None = None,
) -> None:
    """Claim ingests from the coordinator and do them, one at a time, until cancelled.
    ``serve`` starts serving a published directory (catalog and BitTorrent); ``counted``
    is told the bytes fetched from upstream, ``ended`` each ingest's result."""
    hosts = sorted({u.host for u in settings.upstreams} | set(settings.hub_hosts))
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
        ended(await _one(coordinator, settings, ref, serve, counted, signer))


async def _one(
    coordinator: CoordinatorClient,
    settings: UpstreamSettings,
    ref: ModelRef,
    serve: Callable[[Path], None],
    counted: Callable[[int], None],
    signer: Ed25519PrivateKey | None,
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
        pub = await asyncio.to_thread(ingest, ref, settings, count, signer)
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
        "signatures": pub.signatures,
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
