"""What an origin holds: published output directories, loaded and checked once.

A catalog answers by content (blob digest), by web-seed path (torrent name +
file path), by model reference, manifest digest and info-hash. Blobs are
content-addressed, so a file shared by several models is one blob.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoal.digest import Digest
from shoal.errors import SourceError
from shoal.manifest import FileEntry, Manifest
from shoal.publishing.publish import MANIFEST_MSGPACK
from shoal.ref import ModelRef
from shoal.torrent import Torrent


@dataclass(frozen=True, slots=True)
class Model:
    root: Path
    manifest: Manifest
    torrent: bytes
    meta: Torrent

    def blob_path(self, entry: FileEntry) -> Path:
        return self.root / "blobs" / entry.sha256.filename


@dataclass(frozen=True, slots=True)
class Blob:
    path: Path
    size: int
    digest: Digest
    chunk_size: int
    chunk_hashes: bytes


class Catalog:
    def __init__(self, models: list[Model]) -> None:
        self.models: list[Model] = []
        self._by_ref: dict[str, Model] = {}
        self._by_digest: dict[Digest, Model] = {}
        self._by_name: dict[str, Model] = {}
        self._by_hash: dict[bytes, Model] = {}
        self._blobs: dict[Digest, Blob] = {}
        self._files: dict[tuple[str, str], Blob] = {}
        for m in models:
            self.add(m)

    def add(self, m: Model) -> None:
        """Serve ``m`` too (a model ingested while the origin runs): its tag now names it."""
        self.models.append(m)
        self._by_ref[str(m.manifest.ref)] = m
        self._by_digest[m.manifest.digest] = m
        self._by_name[m.meta.name] = m
        self._by_hash[m.manifest.info_hash_v1] = m
        if m.manifest.info_hash_v2:
            self._by_hash[m.manifest.info_hash_v2] = m
            self._by_hash[m.manifest.info_hash_v2[:20]] = m
        for f in m.manifest.files:
            blob = Blob(m.blob_path(f), f.size, f.sha256, m.manifest.chunk_size, f.chunk_hashes)
            self._blobs.setdefault(f.sha256, blob)
            self._files[(m.meta.name, f.path.value)] = blob

    @classmethod
    def load(cls, dirs: list[Path]) -> Catalog:
        """Load published directories; raises ``SourceError`` naming what is wrong."""
        models = [load_model(d) for d in dirs]
        names: dict[str, Path] = {}
        for m in models:
            if m.meta.name in names and names[m.meta.name] != m.root:
                raise SourceError(
                    f"{m.root} and {names[m.meta.name]} publish the same torrent "
                    f"name {m.meta.name!r}",
                    "serve one of them",
                )
            names[m.meta.name] = m.root
        return cls(models)

    def blob(self, digest: Digest) -> Blob | None:
        return self._blobs.get(digest)

    def web_file(self, name: str, path: str) -> Blob | None:
        return self._files.get((name, path))

    def piece_length(self, name: str) -> int | None:
        m = self._by_name.get(name)
        return m.manifest.chunk_size if m else None

    def by_ref(self, ref: ModelRef) -> Model | None:
        return self._by_ref.get(str(ref))

    def by_digest(self, digest: Digest) -> Model | None:
        return self._by_digest.get(digest)

    def by_info_hash(self, info_hash: bytes) -> Model | None:
        return self._by_hash.get(info_hash)


def load_model(root: Path) -> Model:
    try:
        raw = (root / MANIFEST_MSGPACK).read_bytes()
        torrents = sorted(root.glob("*.torrent"))
    except OSError as exc:
        raise SourceError(
            f"{root} is not a published model directory: {exc.strerror}",
            "give directories written by 'shoal publish'",
        ) from None
    manifest = Manifest.load(raw)
    if len(torrents) != 1:
        raise SourceError(f"{root} should hold exactly one .torrent, found {len(torrents)}")
    torrent = torrents[0].read_bytes()
    meta = Torrent.load(torrent)
    meta.check_matches(manifest)
    model = Model(root, manifest, torrent, meta)
    for f in manifest.files:
        path = model.blob_path(f)
        try:
            size = path.stat().st_size
        except OSError:
            raise SourceError(
                f"{root}: blob {f.sha256} of {f.path} is missing", "publish the model again"
            ) from None
        if size != f.size:
            raise SourceError(
                f"{root}: blob {f.sha256} is {size} bytes, the manifest says {f.size}",
                "publish the model again",
            )
    return model
