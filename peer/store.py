"""The local store of a host: content-addressed blobs, manifests and tags.

    <root>/blobs/sha256-<hex>                 file contents, each stored once
    <root>/manifests/sha256-<hex>             canonical manifest bytes
    <root>/tags/<host>/<ns>/<name>/<tag>      text: the manifest digest a tag points at
    <root>/staging/<manifest hex>/...         downloads in progress, never read as final

Only verified bytes reach ``blobs/``: a file moves from staging into place by
rename, after every chunk was verified and the bytes were flushed. A file that
another model already holds is reused, not fetched again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from shoal.digest import Digest
from shoal.errors import BadInput, IntegrityError, ShoalError
from shoal.fsutil import atomic_write, fsync_dir
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef
from shoal.torrent import Torrent
from shoal.units import format_size


class StoreError(BadInput):
    """The store cannot be used as asked (not writable, not enough space)."""


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.manifests = root / "manifests"
        self.tags = root / "tags"
        self.staging = root / "staging"

    def open(self) -> Store:
        """Create the layout; raises ``StoreError`` if the directory is not writable."""
        try:
            for d in (self.blobs, self.manifests, self.tags, self.staging):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"models dir {self.root} is not writable: {exc.strerror}",
                "pick another --models-dir or fix its permissions",
            ) from None
        return self

    # blobs

    def blob_path(self, digest: Digest) -> Path:
        return self.blobs / digest.filename

    def has_blob(self, entry: FileEntry) -> bool:
        try:
            return self.blob_path(entry.sha256).stat().st_size == entry.size
        except OSError:
            return False

    def missing(self, manifest: Manifest) -> list[FileEntry]:
        """Files of ``manifest`` whose content the store does not hold yet."""
        seen: set[Digest] = set()
        out = []
        for f in manifest.files:
            if f.sha256 not in seen and not self.has_blob(f):
                out.append(f)
            seen.add(f.sha256)
        return out

    def check_space(self, manifest: Manifest) -> int:
        """Bytes still to download; raises ``StoreError`` if the disk cannot hold them."""
        needed = sum(f.size for f in self.missing(manifest))
        free = shutil.disk_usage(self.root).free
        if needed > free:
            raise StoreError(
                f"{manifest.ref} needs {format_size(needed)} more but {self.root} has "
                f"{format_size(free)} free",
                "free some space (shoal rm) or use another --models-dir",
            )
        return needed

    def staging_dir(self, manifest: Manifest) -> Path:
        return self.staging / manifest.digest.hex

    def commit(self, entry: FileEntry, staged: Path) -> Path:
        """Move a fully verified, flushed file from staging into ``blobs/``.

        The caller has verified every chunk; this checks the size, fsyncs and renames.
        If the blob is already there (another model), the staged copy is dropped.
        """
        final = self.blob_path(entry.sha256)
        if self.has_blob(entry):
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
            return final
        size = staged.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{entry.path}: staged file is {size} bytes, expected {entry.size}"
            )
        fd = os.open(staged, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        staged.chmod(0o644)
        staged.replace(final)
        fsync_dir(self.blobs)
        return final

    # manifests and tags

    def put(
        self, manifest: Manifest, ref: ModelRef | None = None, torrent: bytes | None = None
    ) -> None:
        """Record ``manifest`` (and its torrent, for seeding) and point ``ref`` (default: its
        own) at it; call only once every blob is in place."""
        missing = self.missing(manifest)
        if missing:
            raise ShoalError(f"cannot record {manifest.ref}: {len(missing)} files are missing")
        if torrent is not None:
            atomic_write(self._torrent_path(manifest), torrent)
        atomic_write(self.manifests / manifest.digest.filename, manifest.canonical_bytes)
        atomic_write(self._tag_path(ref or manifest.ref), f"{manifest.digest}\n".encode())

    def torrent(self, manifest: Manifest) -> bytes | None:
        """The model's torrent if it was kept and still matches the manifest."""
        try:
            data = self._torrent_path(manifest).read_bytes()
            Torrent.load(data).check_matches(manifest)
        except (OSError, BadInput):
            return None
        return data

    def _torrent_path(self, manifest: Manifest) -> Path:
        return self.manifests / f"{manifest.digest.filename}.torrent"

    def resolve(self, ref: ModelRef) -> Manifest | None:
        try:
            digest = Digest.parse(self._tag_path(ref).read_text().strip())
            return self.manifest(digest)
        except (OSError, BadInput):
            return None

    def manifest(self, digest: Digest) -> Manifest | None:
        try:
            manifest = Manifest.load((self.manifests / digest.filename).read_bytes())
        except (OSError, BadInput):
            return None
        return manifest if manifest.digest == digest else None

    def models(self) -> Iterator[tuple[ModelRef, Manifest]]:
        for path in sorted(self.tags.glob("*/*/*/*")):
            host, ns, name, tag = path.relative_to(self.tags).parts
            try:
                ref = ModelRef(host, ns, name, tag)
            except BadInput:
                continue
            manifest = self.resolve(ref)
            if manifest is not None:
                yield ref, manifest

    def remove(self, ref: ModelRef) -> int:
        """Untag ``ref`` and delete blobs no remaining model uses; returns bytes freed."""
        path = self._tag_path(ref)
        if not path.exists():
            raise BadInput(f"{ref} is not in {self.root}", "see 'shoal ls'")
        path.unlink()
        return self.gc()

    def gc(self) -> int:
        """Delete blobs and manifests no tag reaches, and abandoned staging; bytes freed."""
        keep_blobs: set[str] = set()
        keep_manifests: set[str] = set()
        for _, m in self.models():
            keep_manifests.add(m.digest.filename)
            keep_blobs.update(f.sha256.filename for f in m.files)
        freed = 0
        for p in self.blobs.iterdir():
            if p.name not in keep_blobs:
                freed += p.stat().st_size
                p.unlink()
        for p in self.manifests.iterdir():
            if p.name.removesuffix(".torrent") not in keep_manifests:
                p.unlink()
        return freed

    def _tag_path(self, ref: ModelRef) -> Path:
        return self.tags / ref.host / ref.namespace / ref.name / ref.tag
