"""``Manifest``: what a model is, byte for byte, as canonical msgpack.

Canonical form: a msgpack map with the keys in sorted order, integers in their
shortest encoding, text as str, digests as bin. Chunk digests of a file are one
bin of 32 bytes per chunk. Files are in canonical path order (the BitTorrent v2
file-tree order), so file i and its chunks are the torrent's file i and pieces.

The manifest digest is the SHA-256 of the canonical bytes. ``Manifest.load``
decodes with hard limits, validates every field, re-encodes and refuses bytes
that are not canonical, so a digest is never taken from the wire.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack

from shoal.chunking import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count
from shoal.digest import Digest
from shoal.errors import BadInput, InvalidManifest
from shoal.ref import ModelRef
from shoal.relpath import MAX_PATH_BYTES, RelPath

SCHEMA = 1
MAX_FILES = 65_536
MAX_CHUNKS = 1 << 20  # 32 MiB of chunk digests: 64 TiB at 64 MiB chunks
MAX_FILE_SIZE = 1 << 46
MAX_MEDIA_TYPE = 255
MAX_MANIFEST_BYTES = 40 * 1024 * 1024
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_TOP_KEYS = ("chunk_size", "files", "info_hash_v1", "info_hash_v2", "ref", "schema")
_FILE_KEYS = ("chunks", "media_type", "path", "sha256", "size")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a model: where it goes, what it is, and the digest of every chunk."""

    path: RelPath
    size: int
    sha256: Digest
    media_type: str | None
    chunk_hashes: bytes  # 32 bytes per chunk, in order

    def __post_init__(self) -> None:
        if type(self.size) is not int or not 0 <= self.size <= MAX_FILE_SIZE:
            raise InvalidManifest(f"file {self.path}: invalid size {self.size!r}")
        if self.media_type is not None and (
            not isinstance(self.media_type, str)
            or len(self.media_type) > MAX_MEDIA_TYPE
            or not _MEDIA_TYPE.fullmatch(self.media_type)
        ):
            raise InvalidManifest(f"file {self.path}: invalid media type {self.media_type!r}")
        if not isinstance(self.chunk_hashes, bytes) or len(self.chunk_hashes) % 32:
            raise InvalidManifest(f"file {self.path}: chunk digests are not 32-byte values")

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_hashes) // 32

    def chunk(self, index: int) -> Digest:
        """The digest of chunk ``index`` of this file."""
        if not 0 <= index < self.num_chunks:
            raise IndexError(index)
        return Digest.from_bytes(self.chunk_hashes[32 * index : 32 * index + 32])

    def chunks(self) -> Iterator[Digest]:
        for i in range(self.num_chunks):
            yield self.chunk(i)


@dataclass(frozen=True)
class Manifest:
    """A validated model manifest. Build one directly or with ``Manifest.load``."""

    ref: ModelRef
    chunk_size: int
    files: tuple[FileEntry, ...]
    info_hash_v1: bytes
    info_hash_v2: bytes | None
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        _validate(self)

    @cached_property
    def canonical_bytes(self) -> bytes:
        """The canonical msgpack encoding."""
        return _pack(self)

    @cached_property
    def digest(self) -> Digest:
        """SHA-256 of the canonical bytes."""
        return Digest(hashlib.sha256(self.canonical_bytes).hexdigest())

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def num_chunks(self) -> int:
        return sum(f.num_chunks for f in self.files)

    @classmethod
    def load(cls, data: bytes) -> Manifest:
        """Decode, validate and check canonical form; raises ``InvalidManifest``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidManifest("manifest must be bytes")
        if len(data) > MAX_MANIFEST_BYTES:
            raise InvalidManifest(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            obj = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                use_list=True,
                max_str_len=MAX_PATH_BYTES,
                max_bin_len=32 * MAX_CHUNKS,
                max_array_len=MAX_FILES,
                max_map_len=len(_TOP_KEYS),
                max_ext_len=0,
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise InvalidManifest(f"manifest is not valid msgpack: {exc}") from None
        try:
            manifest = _from_obj(obj)
        except BadInput as exc:
            if isinstance(exc, InvalidManifest):
                raise
            raise InvalidManifest(f"invalid manifest: {exc}") from None
        if manifest.canonical_bytes != bytes(data):
            raise InvalidManifest("manifest bytes are not in canonical form")
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The JSON view for humans and scripts."""
        return {
            "schema": self.schema,
            "ref": str(self.ref),
            "digest": str(self.digest),
            "chunk_size": self.chunk_size,
            "info_hash_v1": self.info_hash_v1.hex(),
            "info_hash_v2": self.info_hash_v2.hex() if self.info_hash_v2 else None,
            "total_size": self.total_size,
            "num_chunks": self.num_chunks,
            "files": [
                {
                    "path": f.path.value,
                    "size": f.size,
                    "sha256": f.sha256.hex,
                    "media_type": f.media_type,
                    "chunks": [
                        f.chunk_hashes[i : i + 32].hex() for i in range(0, len(f.chunk_hashes), 32)
                    ],
                }
                for f in self.files
            ],
        }


def _pack(m: Manifest) -> bytes:
    files = [
        {
            "chunks": f.chunk_hashes,
            "media_type": f.media_type,
            "path": f.path.value,
            "sha256": f.sha256.raw,
            "size": f.size,
        }
        for f in m.files
    ]
    top = {
        "chunk_size": m.chunk_size,
        "files": files,
        "info_hash_v1": m.info_hash_v1,
        "info_hash_v2": m.info_hash_v2,
        "ref": str(m.ref),
        "schema": m.schema,
    }
    packed: bytes = msgpack.packb(top, use_bin_type=True)
    return packed


def _from_obj(obj: object) -> Manifest:
    top = _map(obj, _TOP_KEYS, "manifest")
    if top["schema"] != SCHEMA or type(top["schema"]) is not int:
        raise InvalidManifest(
            f"unsupported manifest schema {top['schema']!r}",
            f"this shoal reads schema {SCHEMA}; upgrade shoal",
        )
    if not isinstance(top["ref"], str):
        raise InvalidManifest("manifest ref must be text")
    if not isinstance(top["files"], list):
        raise InvalidManifest("manifest files must be a list")
    files = []
    for i, raw in enumerate(top["files"]):
        f = _map(raw, _FILE_KEYS, f"file {i}")
        sha = f["sha256"]
        if not isinstance(sha, bytes) or len(sha) != 32:
            raise InvalidManifest(f"file {i}: sha256 must be 32 bytes")
        if f["media_type"] is not None and not isinstance(f["media_type"], str):
            raise InvalidManifest(f"file {i}: media type must be text or nil")
        files.append(
            FileEntry(
                path=RelPath(f["path"]),
                size=f["size"],
                sha256=Digest.from_bytes(sha),
                media_type=f["media_type"],
                chunk_hashes=f["chunks"],
            )
        )
    return Manifest(
        ref=ModelRef.parse(top["ref"]),
        chunk_size=top["chunk_size"],
        files=tuple(files),
        info_hash_v1=top["info_hash_v1"],
        info_hash_v2=top["info_hash_v2"],
        schema=top["schema"],
    )


def _map(obj: object, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidManifest(f"{what} must be a map")
    if tuple(obj) != keys:
        raise InvalidManifest(f"{what} must have exactly the keys {', '.join(keys)} in order")
    return obj


def _validate(m: Manifest) -> None:
    if type(m.schema) is not int or m.schema != SCHEMA:
        raise InvalidManifest(f"unsupported manifest schema {m.schema!r}")
    if not isinstance(m.ref, ModelRef):
        raise InvalidManifest("manifest ref must be a ModelRef")
    cs = m.chunk_size
    if type(cs) is not int or cs < MIN_CHUNK_SIZE or cs > MAX_CHUNK_SIZE or cs & (cs - 1):
        raise InvalidManifest(f"invalid chunk size {cs!r}")
    if not isinstance(m.info_hash_v1, bytes) or len(m.info_hash_v1) != 20:
        raise InvalidManifest("info_hash_v1 must be 20 bytes")
    if m.info_hash_v2 is not None and (
        not isinstance(m.info_hash_v2, bytes) or len(m.info_hash_v2) != 32
    ):
        raise InvalidManifest("info_hash_v2 must be 32 bytes or absent")
    if not m.files:
        raise InvalidManifest("manifest lists no files")
    if len(m.files) > MAX_FILES:
        raise InvalidManifest(f"manifest lists more than {MAX_FILES} files")
    total_chunks = 0
    previous: tuple[bytes, ...] | None = None
    for f in m.files:
        if not isinstance(f, FileEntry):
            raise InvalidManifest("manifest files must be FileEntry values")
        key = f.path.sort_key
        if previous is not None:
            if key <= previous:
                raise InvalidManifest(f"file {f.path} is out of canonical order or repeated")
            if key[: len(previous)] == previous:
                raise InvalidManifest(f"file {f.path} lies under another file's path")
        previous = key
        expected = chunk_count(f.size, cs)
        if f.num_chunks != expected:
            raise InvalidManifest(
                f"file {f.path}: {f.num_chunks} chunk digests for {f.size} bytes, "
                f"expected {expected}"
            )
        total_chunks += expected
    if total_chunks > MAX_CHUNKS:
        raise InvalidManifest(f"manifest has more than {MAX_CHUNKS} chunks")
    if total_chunks == 0:
        raise InvalidManifest("manifest describes an empty model (0 bytes)")
