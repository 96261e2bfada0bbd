"""A pull with no coordinator of a model from its upstream registry (``shoal agent
--upstream``): the LAN first, upstream once.

The host reads the manifest the tag names upstream (the one authority on that name), then
asks the LAN for it (peer/lan.py). A host that has it sends it over BitTorrent: the torrent
is fetched by its info-hash from the hosts that named it, checked to list exactly the
manifest's blobs, and every piece is checked by libtorrent. Otherwise one host fetches it
from upstream (the others wait for it). Either way every blob is hashed whole against the
upstream manifest before it is given its name, then published as the origin publishes
(shoal/publishing), so every host seeds the same torrent, and put in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peer import lan
from peer.engine import PullResult
from peer.session import ByHash, TorrentSession
from peer.store import Store, file_digest
from shoal import ollama_manifest as om
from shoal.digest import Digest
from shoal.errors import IntegrityError, LocalError, RemoteError, ShoalError
from shoal.manifest import Manifest
from shoal.publishing.ollama import MANIFEST_PATH, ollama_source
from shoal.publishing.publish import PublishOptions, publish
from shoal.ref import ModelRef
from shoal.relpath import RelPath
from shoal.torrent import Torrent
from shoal.units import format_size
from shoal.upstream.fetch import Fetch, UpstreamSettings, blobs_of

log = logging.getLogger("shoal.solo")
WANT_EVERY = 1.0  # seconds between two wants of a host that waits


@dataclass(frozen=True)
class Solo:
    upstream: UpstreamSettings  # work: under the store, so blobs move by rename
    beacon: lan.Beacon
    listen: float = 1.5  # seconds a host listens for others before it fetches itself
    patience: float = 10.0  # seconds a silent host still counts as fetching
    metadata_timeout: float = 30.0  # for the torrent's info from the hosts that named it
    stall_timeout: float = 60.0  # without a byte from the LAN

    def covers(self, ref: ModelRef) -> bool:
        return self.upstream.upstream(ref) is not None


async def pull(
    ref: ModelRef,
    solo: Solo,
    store: Store,
    ses: TorrentSession,
    make_room: Callable[[int], None] | None = None,
) -> PullResult:
    """``make_room``: told the bytes the model needs before any is fetched (the agent
    evicts to fit its budget, or raises to refuse the pull)."""
    started = time.monotonic()
    with Fetch(ref, solo.upstream) as fetch:
        try:
            raw, digest = await asyncio.to_thread(fetch.manifest)
        except RemoteError as exc:  # upstream unreachable: what the store holds stands
            held = store.resolve(ref)
            if held is None or store.missing(held):
                raise
            log.warning("%s: upstream unreachable (%s); the copy held here stands", ref, exc)
            return PullResult(held, already_present=True)
        held = _held(store, ref, digest)
        if held is not None:
            store.touch(ref)
            return PullResult(held, already_present=True)
        blobs = blobs_of(raw, ref, fetch.up.url)
        need = sum(b.size for b in blobs) + len(raw)
        if make_room is not None:
            make_room(need)
        if need > store.free():
            raise LocalError(
                f"{ref} needs {format_size(need)} but {store.root} has "
                f"{format_size(store.free())} free",
                "free some space (shoal rm) or use another --models-dir",
            )
        _reuse(blobs, store, solo.upstream.store)
        try:  # a host that fetches from upstream says so until it seeds: the others wait
            peer_bytes, upstream_bytes = await _fetch(ref, solo, ses, fetch, (raw, digest), blobs)
            manifest = await asyncio.to_thread(_import, ref, raw, blobs, solo.upstream, store)
        finally:
            solo.beacon.fetching.discard(digest)
    log.info("%s: %d bytes from LAN peers, %d from upstream", ref, peer_bytes, upstream_bytes)
    return PullResult(
        manifest,
        seconds=time.monotonic() - started,
        bytes_peer=peer_bytes,
        bytes_upstream=upstream_bytes,
    )


def _reuse(blobs: list[om.Blob], store: Store, upstream_store: Path) -> None:
    """Link the blobs the store holds already (an earlier version of the tag, another
    model) where the fetch looks first: only what changed moves."""
    for b in blobs:
        held, dest = store.blob_path(b.digest), upstream_store / "blobs" / b.digest.filename
        with contextlib.suppress(OSError):  # not held, or held at another size: fetched
            if held.stat().st_size == b.size and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(held, dest)


def _held(store: Store, ref: ModelRef, digest: Digest) -> Manifest | None:
    """The model ``ref`` names in the store, if whole and made from upstream ``digest``."""
    m = store.resolve(ref)
    if m is None or upstream_digest(m) != digest or store.missing(m):
        return None
    return m


def upstream_digest(m: Manifest) -> Digest | None:
    """The digest of the registry manifest a model was published from, if it was."""
    return next((f.sha256 for f in m.files if f.path.value == MANIFEST_PATH), None)


async def _fetch(
    ref: ModelRef,
    solo: Solo,
    ses: TorrentSession,
    fetch: Fetch,
    manifest: tuple[bytes, Digest],
    blobs: list[om.Blob],
) -> tuple[int, int]:
    """The blobs the upstream ``manifest`` lists into the upstream store, from the LAN or
    upstream; returns the bytes from each."""
    raw, digest = manifest
    refused: set[tuple[str, int]] = set()
    asked = -WANT_EVERY
    with solo.beacon.listening(digest) as heard:
        while True:
            now = time.monotonic()
            if now - asked >= WANT_EVERY:  # not at every wake-up: that would be a storm
                solo.beacon.want(digest)
                asked = now
            for where in refused:
                heard.haves.pop(where, None)
            step = lan.next_step(heard, solo.beacon.id, now, solo.listen, solo.patience)
            log.debug("%s: %s (heard %s)", ref, step, heard)
            if step is lan.Step.LAN:
                hosts = dict(heard.haves)
                try:
                    return await _from_lan(solo, ses, hosts, raw, blobs), 0
                except ShoalError as exc:
                    log.warning("%s from LAN hosts %s failed: %s", ref, sorted(hosts), exc)
                    refused |= set(hosts)
                    continue
            if step is lan.Step.FETCH:
                log.info("%s: no LAN host has it or fetches it; fetching it from upstream", ref)
                solo.beacon.fetching.add(digest)
                return 0, await _from_upstream(fetch, raw, digest)
            await heard.changed(max(0.05, asked + WANT_EVERY - time.monotonic()))


async def _from_upstream(fetch: Fetch, raw: bytes, digest: Digest) -> int:
    fetched = [0]

    def count(n: int) -> None:
        fetched[0] += n

    await asyncio.to_thread(fetch.blobs, raw, digest, count)
    return fetched[0]


async def _from_lan(
    solo: Solo,
    ses: TorrentSession,
    hosts: dict[tuple[str, int], bytes],
    raw: bytes,
    blobs: list[om.Blob],
) -> int:
    """Fetch the torrent most hosts named (a liar is one voice), check it lists exactly
    ``blobs`` and the manifest, then hash each file whole into the upstream store."""
    info_hash = Counter(hosts.values()).most_common(1)[0][0]
    staging = solo.upstream.work / "lan" / info_hash.hex()
    sources = [h for h, ih in hosts.items() if ih == info_hash]
    try:
        by_hash = ses.fetch_by_hash(info_hash, staging, sources)
        try:
            torrent = Torrent.from_info(await _info(by_hash, solo.metadata_timeout))
            expected = {(RelPath(MANIFEST_PATH), len(raw))} | {
                (RelPath(f"blobs/{b.digest.filename}"), b.size) for b in blobs
            }
            if len(torrent.files) != len(expected) or set(torrent.files) != expected:
                raise IntegrityError(
                    f"the torrent {info_hash.hex()} LAN hosts named does not hold this "
                    "model's blobs"
                )
            await _complete(by_hash, solo.stall_timeout)
        finally:
            ses.remove_by_hash(by_hash)
        # a multi-file torrent is written under its name (checked to be a relative path)
        paths = [staging / torrent.name / path.value for path, _ in torrent.files]
        await asyncio.to_thread(_adopt, paths, torrent, raw, solo.upstream.store)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sum(size for _, size in torrent.files)


async def _info(by_hash: ByHash, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while (info := by_hash.info()) is None:
        if time.monotonic() > deadline:
            raise RemoteError(f"no LAN host sent the torrent's info within {timeout:g} s")
        await asyncio.sleep(0.1)
    return info


async def _complete(by_hash: ByHash, stall: float) -> None:
    """Wait for every piece; raises after ``stall`` seconds without a byte."""
    last, since = -1, time.monotonic()
    while True:
        done, _, complete = by_hash.progress()
        if complete:
            return
        now = time.monotonic()
        if done != last:
            last, since = done, now
        elif now - since > stall:
            raise RemoteError(f"no byte from the LAN hosts for {stall:g} s")
        await asyncio.sleep(0.2)


def _adopt(paths: list[Path], torrent: Torrent, raw: bytes, store: Path) -> None:
    """Each file fetched from the LAN (at ``paths``), hashed whole against the upstream
    manifest, into the upstream store under its digest's name."""
    for (path, size), src in zip(torrent.files, paths, strict=True):
        if path.value == MANIFEST_PATH:
            if src.read_bytes() != raw:
                raise IntegrityError("the LAN hosts sent another manifest than upstream's")
            continue
        expected = Digest.parse_filename(path.parts[-1])
        if size == 0:
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(b"")
        with src.open("rb") as f:
            got = file_digest(f)
        if got != expected:
            raise IntegrityError(f"{path} from the LAN hashes to {got}; nothing was kept")
        dest = store / "blobs" / expected.filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.replace(dest)


def _import(
    ref: ModelRef,
    raw: bytes,
    blobs: list[om.Blob],
    settings: UpstreamSettings,
    store: Store,
) -> Manifest:
    """Publish the model from the upstream store and move it into ``store``."""
    from shoal.fsutil import atomic_write

    atomic_write(settings.store / "manifests" / ref.ollama_path, raw)
    out = settings.work / "published" / ref.slug
    shutil.rmtree(out, ignore_errors=True)
    pub = publish(ollama_source(str(ref), settings.store), PublishOptions(ref=ref, out=out))
    for entry in pub.manifest.files:
        store.commit(entry, out / "blobs" / entry.sha256.filename)
    store.put(pub.manifest, ref, pub.torrent_path.read_bytes())
    shutil.rmtree(out, ignore_errors=True)
    for b in blobs:  # other names of what the store holds now
        (settings.store / "blobs" / b.digest.filename).unlink(missing_ok=True)
    (settings.store / "manifests" / ref.ollama_path).unlink(missing_ok=True)
    return pub.manifest
