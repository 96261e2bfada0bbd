"""``shoal publish``: a source becomes manifest + torrent + content-addressed blobs.

The output directory is built under a hidden temporary name beside its final
place and renamed into place only when complete, so a failure or a kill never
leaves a half-written output where a seeder would serve it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal import torrent
from shoal.chunking import check_chunk_size, choose_chunk_size
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import OutputExists, ShoalError, SourceError
from shoal.fsutil import fsync_dir
from shoal.manifest import FileEntry, Manifest
from shoal.publishing.hashing import FileHashes, Hasher
from shoal.publishing.sources import Source, SourceFile
from shoal.ref import ModelRef
from shoal.signing import sign

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from shoal.urls import check_url, directory_url

MANIFEST_MSGPACK = "manifest.msgpack"
SIGNATURE = "signature.msgpack"  # the publisher's signature of the manifest, if it signed
MANIFEST_JSON = "manifest.json"
# a hard link is impossible here: fall back to copying
_LINK_ERRORS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP}


@dataclass(frozen=True)
class PublishOptions:
    """What ``shoal publish`` was asked to do, validated by ``__post_init__``."""

    ref: ModelRef
    out: Path | None = None
    chunk_size: int | None = None
    trackers: Sequence[str] = field(default_factory=tuple)
    web_seeds: Sequence[str] = field(default_factory=tuple)
    v1_only: bool = False
    force: bool = False
    threads: int | None = None
    coordinator: CoordinatorClient | None = None  # upload there before the output appears
    signer: Ed25519PrivateKey | None = field(default=None, repr=False)  # signs the manifest

    def __post_init__(self) -> None:
        if self.chunk_size is not None:
            check_chunk_size(self.chunk_size)
        for t in self.trackers:
            check_url(t, "tracker", ("http", "https", "udp"))
        for w in self.web_seeds:
            check_url(w, "web seed")

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("published") / self.ref.slug


@dataclass(frozen=True)
class Published:
    out: Path
    manifest: Manifest
    torrent_path: Path
    linked: int  # blobs hard-linked rather than copied

    @property
    def signatures(self) -> list[bytes]:
        """The publisher's signature of the manifest, if it signed it."""
        path = self.out / SIGNATURE
        return [path.read_bytes()] if path.exists() else []


def publish(
    source: Source, opts: PublishOptions, progress: Callable[[int], None] | None = None
) -> Published:
    """Hash ``source`` once and write the output directory atomically.

    Raises ``SourceError``/``OutputExists`` for bad input, ``ShoalError`` otherwise.
    """
    out = opts.out_dir.absolute()
    if source.root is not None and out.is_relative_to(source.root):
        raise SourceError(
            f"output directory {out} is inside the source {source.root}",
            "pass --out with a directory outside the source",
        )
    if out.exists() and not opts.force:
        raise OutputExists(
            f"output directory {out} already exists",
            "remove it, choose another --out, or pass --force to replace it",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "blobs").mkdir(parents=True)
    try:
        result = _build(source, opts, out, tmp, progress)
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _build(
    source: Source,
    opts: PublishOptions,
    out: Path,
    tmp: Path,
    progress: Callable[[int], None] | None,
) -> Published:
    if sum(f.size for f in source.files) == 0:
        raise SourceError(f"{source.description} holds only empty files", "nothing to publish")
    chunk_size = opts.chunk_size or choose_chunk_size(f.size for f in source.files)
    entries: list[FileEntry] = []
    tfiles: list[torrent.TorrentFile] = []
    linked = 0
    with Hasher(chunk_size, v2=not opts.v1_only, threads=opts.threads) as hasher:
        for i, sf in enumerate(source.files):
            pad = torrent.pads_last_piece(len(source.files))
            hashes, was_linked = _hash_into_blobs(hasher, sf, tmp / "blobs", i, pad, progress)
            linked += was_linked
            entries.append(
                FileEntry(sf.rel, sf.size, hashes.sha256, sf.media_type, hashes.chunk_hashes)
            )
            tfiles.append(
                torrent.TorrentFile(
                    sf.rel, sf.size, hashes.pieces_v1, hashes.piece_layer, hashes.pieces_root
                )
            )
    blob = torrent.build(
        opts.ref.slug,
        chunk_size,
        tfiles,
        trackers=list(opts.trackers),
        web_seeds=[directory_url(w) for w in opts.web_seeds],
        v1_only=opts.v1_only,
    )
    meta = torrent.Torrent.load(blob)
    _check_with_libtorrent(blob, meta)
    manifest = Manifest(
        ref=opts.ref,
        chunk_size=chunk_size,
        files=tuple(entries),
        info_hash_v1=meta.info_hash_v1,
        info_hash_v2=meta.info_hash_v2,
    )
    signatures = [sign(manifest, opts.signer).to_wire()] if opts.signer is not None else []
    if opts.coordinator is not None:
        opts.coordinator.publish(manifest, blob, opts.ref, signatures)
    if signatures:
        _write(tmp / SIGNATURE, signatures[0])
    torrent_name = f"{opts.ref.slug}.torrent"
    _write(tmp / torrent_name, blob)
    _write(tmp / MANIFEST_MSGPACK, manifest.canonical_bytes)
    _write(tmp / MANIFEST_JSON, (json.dumps(manifest.to_json(), indent=1) + "\n").encode())
    fsync_dir(tmp / "blobs")
    fsync_dir(tmp)
    return Published(out=out, manifest=manifest, torrent_path=out / torrent_name, linked=linked)


def _hash_into_blobs(
    hasher: Hasher,
    sf: SourceFile,
    blobs: Path,
    index: int,
    pad_last: bool,
    progress: Callable[[int], None] | None,
) -> tuple[FileHashes, bool]:
    incoming = blobs / f".incoming-{index}"
    linked = False
    with contextlib.ExitStack() as stack:
        stream: BinaryIO
        if sf.path is not None:
            try:
                stream = stack.enter_context(sf.path.open("rb"))
            except OSError as exc:
                raise SourceError(f"cannot read {sf.path}: {exc.strerror}") from None
            before = os.fstat(stream.fileno())
            with contextlib.suppress(AttributeError, OSError):
                os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            linked = _try_link(sf.path, incoming, before)
        else:
            stream = io.BytesIO(sf.data or b"")
            before = None
        sink = None if linked else stack.enter_context(incoming.open("xb"))
        hashes = hasher.hash_stream(
            stream,
            sf.size,
            name=str(sf.path or sf.rel),
            pad_last=pad_last,
            sink=sink,
            progress=progress,
        )
        if before is not None:
            after = os.fstat(stream.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise SourceError(
                    f"{sf.path} changed while it was read",
                    "make sure nothing writes to the source while publishing",
                )
        if sink is not None:
            sink.flush()
            os.fsync(sink.fileno())
    if not linked:
        incoming.chmod(0o644)
    if sf.expected is not None and sf.expected != hashes.sha256:
        raise SourceError(
            f"{sf.path or sf.rel} does not match its digest: expected {sf.expected}, "
            f"hashed {hashes.sha256}",
            "the file is damaged; fetch it again from its origin (for ollama: ollama pull)",
        )
    final = blobs / hashes.sha256.filename
    if final.exists():
        incoming.unlink()
    else:
        incoming.rename(final)
    return hashes, linked


def _try_link(src: Path, dst: Path, st: os.stat_result) -> bool:
    if st.st_size == 0:
        return False
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno in _LINK_ERRORS:
            return False
        raise SourceError(f"cannot link {src} into {dst.parent}: {exc.strerror}") from None
    return True


def _check_with_libtorrent(blob: bytes, meta: torrent.Torrent) -> None:
    import libtorrent as lt

    try:
        info = lt.torrent_info(blob)
    except RuntimeError as exc:
        raise ShoalError(f"libtorrent rejects the torrent shoal built: {exc}") from None
    hashes = info.info_hashes()
    v2 = bytes(hashes.v2.to_bytes()) if hashes.has_v2() else None
    if bytes(hashes.v1.to_bytes()) != meta.info_hash_v1 or v2 != meta.info_hash_v2:
        raise ShoalError("libtorrent computes different info-hashes for the torrent shoal built")


def _write(path: Path, data: bytes) -> None:
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _install(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    fsync_dir(out.parent)


def _remove_stale_partials(out: Path) -> None:
    """Remove what a killed publish to the same place left behind."""
    for p in out.parent.glob(f".{out.name}.partial-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
