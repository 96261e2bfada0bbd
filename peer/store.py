"""The local store of a host: content-addressed blobs, manifests and tags.

    <root>/blobs/sha256-<hex>                 file contents, each stored once
    <root>/manifests/sha256-<hex>             canonical manifest bytes
    <root>/tags/<host>/<ns>/<name>/<tag>      text: the manifest digest a tag points at
    <root>/staging/<manifest hex>/...         downloads in progress, never read as final
    <root>/pins.json                          models eviction never touches

A tag file's mtime is when the model was last used (pulled, found by a pull, exported):
the disk budget evicts the least recently used first.

Only bytes this host hashed to their name reach ``blobs/``: a file moves from
staging into place by rename after every chunk was verified, the bytes were flushed,
and the whole file was hashed to the digest it is named by. Chunk digests prove the
chunks, not the file's name: a manifest can list a file digest that its chunks do not
add up to, and would then plant its bytes under another model's digest. So a blob in
``blobs/`` is "present" for any model, and a file that another model already holds is
reused, not fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path

from shoal.digest import Digest
from shoal.errors import BadInput, IntegrityError, LocalError, ShoalError
from shoal.fsutil import atomic_write, fsync_dir
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef
from shoal.torrent import Torrent
from shoal.units import format_size

PINS_FILE = "pins.json"
_READ = 1 << 20


def file_digest(f: BufferedReader) -> Digest:
    """SHA-256 of an open file from its current position, read 1 MiB at a time
    (hashlib lets go of the GIL for each, so files hash in parallel threads)."""
    h = hashlib.sha256()
    buf = bytearray(_READ)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
    return Digest(h.hexdigest())


class StoreError(LocalError):
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

    def needed(self, manifest: Manifest) -> int:
        """Bytes ``manifest`` still needs on disk: its missing files, less what an earlier,
        interrupted pull already wrote into staging."""
        staged = self.staging_dir(manifest)
        total = 0
        for f in self.missing(manifest):
            try:
                on_disk = (staged / f.sha256.hex).stat().st_blocks * 512
            except OSError:
                on_disk = 0
            total += max(0, f.size - on_disk)
        return total

    def usage(self) -> int:
        """Bytes the store occupies: blobs, and downloads in progress."""
        total = sum(p.stat().st_size for p in self.blobs.iterdir())
        for p in self.staging.rglob("*"):
            with contextlib.suppress(OSError):
                total += p.stat().st_blocks * 512 if p.is_file() else 0
        return total

    def free(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_space(self, manifest: Manifest) -> int:
        """Bytes still to download; raises ``StoreError`` if the disk cannot hold them."""
        needed = self.needed(manifest)
        free = self.free()
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

        The caller has verified every chunk; this checks the size, hashes the whole file
        against the digest it will be named by (``IntegrityError`` if it differs: the
        staged file is deleted, as its chunks match a manifest that lies), fsyncs and
        renames. If the blob is already there (another model), the staged copy is dropped.
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
        with staged.open("rb") as f:
            got = file_digest(f)
            os.fsync(f.fileno())
        if got != entry.sha256:
            staged.unlink()
            raise IntegrityError(
                f"{entry.path}: its chunks match the manifest but the whole file hashes to "
                f"{got}, not {entry.sha256} as the manifest says; nothing was stored under "
                "that name",
                "the manifest is inconsistent: ask its publisher to publish it again",
            )
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

    def touch(self, ref: ModelRef) -> None:
        """Mark ``ref`` used now (the disk budget evicts the least recently used first)."""
        with contextlib.suppress(OSError):
            os.utime(self._tag_path(ref))

    def last_used(self, ref: ModelRef) -> float:
        try:
            return self._tag_path(ref).stat().st_mtime
        except OSError:
            return 0.0

    # pins: models the disk budget never evicts

    def pinned(self) -> set[ModelRef]:
        try:
            raw = json.loads((self.root / PINS_FILE).read_text())
        except (OSError, ValueError):
            return set()
        out = set()
        for r in raw if isinstance(raw, list) else ():
            with contextlib.suppress(BadInput):
                out.add(ModelRef.parse(str(r)))
        return out

    def pin(self, ref: ModelRef, on: bool = True) -> None:
        if on and self.resolve(ref) is None:
            raise BadInput(f"cannot pin {ref}: it is not in {self.root}", "pull it first")
        pins = self.pinned()
        pins = pins | {ref} if on else pins - {ref}
        atomic_write(self.root / PINS_FILE, json.dumps(sorted(map(str, pins))).encode())

    def remove(self, ref: ModelRef, keep: frozenset[str] = frozenset()) -> int:
        """Untag (and unpin) ``ref``, delete blobs no remaining model uses and not in
        ``keep`` (blob file names a pull in progress counts on); returns bytes freed."""
        path = self._tag_path(ref)
        if not path.exists():
            raise BadInput(f"{ref} is not in {self.root}", "see 'shoal ls'")
        path.unlink()
        if ref in self.pinned():
            self.pin(ref, on=False)
        return self.gc(keep)

    def gc(self, keep: frozenset[str] = frozenset()) -> int:
        """Delete blobs (but those in ``keep``) and manifests no tag reaches; bytes freed."""
        keep_blobs: set[str] = set(keep)
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

    # signatures: the one this host accepted last for a tag, its version for rollbacks

    def accepted(self, ref: ModelRef) -> bytes | None:
        """The signature this host accepted when it last took ``ref`` (shoal/signing.py)."""
        try:
            return (self.root / "signed" / self._tag_path(ref).relative_to(self.tags)).read_bytes()
        except OSError:
            return None

    def accept(self, ref: ModelRef, signature: bytes) -> None:
        atomic_write(self.root / "signed" / self._tag_path(ref).relative_to(self.tags), signature)

    def _tag_path(self, ref: ModelRef) -> Path:
        return self.tags / ref.host / ref.namespace / ref.name / ref.tag
