"""What the mirror can serve from a host's store: each stored model's manifest as a
registry serves it, and the blobs that manifest names.

A model published from ollama's store or pulled through from a registry carries the
registry's manifest (``ollama-manifest.json``), served byte for byte so its digest
holds; any other model is served as the OCI artifact ``oci.artifact_manifest`` derives.
Only blobs in the store are served: the store names a blob only after this host hashed
it to that name (peer/store.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peer.export import OLLAMA_MANIFEST
from peer.mirror import oci
from peer.store import Store
from shoal.digest import Digest
from shoal.manifest import Manifest
from shoal.ref import ModelRef


@dataclass(frozen=True, slots=True)
class Served:
    """A model as the mirror serves it."""

    raw: bytes  # the manifest's bytes
    media_type: str
    digest: Digest  # of ``raw``
    blobs: frozenset[Digest]  # what it names, each servable under its repository


def served(store: Store, manifest: Manifest) -> Served:
    own = next((f for f in manifest.files if f.path.value == OLLAMA_MANIFEST), None)
    if own is None:
        return derived(manifest)
    return from_raw(store.blob_path(own.sha256).read_bytes(), manifest)


def derived(manifest: Manifest) -> Served:
    """A model from no registry: the OCI artifact made from its shoal manifest."""
    raw = oci.artifact_manifest(manifest)
    blobs = {f.sha256 for f in manifest.files} | {oci.EMPTY_DIGEST}
    return Served(raw, oci.media_type(raw), Digest.of(raw), frozenset(blobs))


def from_raw(raw: bytes, manifest: Manifest) -> Served:
    """A model with its registry's manifest ``raw`` (verified by the caller)."""
    blobs = frozenset(f.sha256 for f in manifest.files)
    return Served(raw, oci.media_type(raw), Digest.of(raw), blobs)


def _repository(ref: ModelRef, name: str, host: str | None) -> bool:
    return f"{ref.namespace}/{ref.name}" == name and (host is None or ref.host == host)


def by_tag(store: Store, ref: ModelRef) -> Served | None:
    manifest = store.resolve(ref)
    return None if manifest is None else served(store, manifest)


def by_digest(store: Store, name: str, host: str | None, digest: Digest) -> Served | None:
    for ref, manifest in store.models():
        if _repository(ref, name, host):
            s = served(store, manifest)
            if s.digest == digest:
                return s
    return None


@dataclass(frozen=True, slots=True)
class Blob:
    size: int
    path: Path | None  # None: ``oci.EMPTY_CONFIG``, served from memory


def blob(store: Store, name: str, host: str | None, digest: Digest) -> Blob | None:
    """The blob ``digest`` if a stored model of repository ``name`` names it."""
    for ref, manifest in store.models():
        if not _repository(ref, name, host):
            continue
        if digest == oci.EMPTY_DIGEST and served(store, manifest).blobs >= {digest}:
            return Blob(len(oci.EMPTY_CONFIG), None)
        for f in manifest.files:
            if f.sha256 == digest:
                path = store.blob_path(digest)
                try:
                    if path.stat().st_size == f.size:
                        return Blob(f.size, path)
                except OSError:
                    continue
    return None
