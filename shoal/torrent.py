"""Torrent metainfo: build hybrid (v1+v2) or v1-only torrents, and load them back.

Files are aligned to pieces with BEP 47 pad files, also after the last file
unless it is the only one (libtorrent's layout, so a torrent libtorrent makes
of the same directory has the same info-hashes). Piece i of a file is chunk i
of that file in the manifest.
Info-hashes: v1 = SHA-1 and v2 = SHA-256 of the bencoded ``info`` dict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoal import __version__, bencode, merkle
from shoal.chunking import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count
from shoal.errors import BadInput, InvalidTorrent
from shoal.manifest import MAX_CHUNKS, MAX_FILES, Manifest
from shoal.relpath import PAD_DIR, RelPath

MAX_TORRENT_BYTES = 64 << 20


def pads_last_piece(num_files: int) -> bool:
    """Whether each file's last piece is zero-padded (v1 SHA-1 over the pad bytes too)."""
    return num_files > 1


@dataclass(frozen=True, slots=True)
class TorrentFile:
    """One file with its piece hashes (v1: 20 bytes a piece; v2: 32 bytes a piece)."""

    path: RelPath
    size: int
    pieces_v1: bytes
    piece_layer: bytes
    pieces_root: bytes | None


def build(
    name: str,
    piece_length: int,
    files: Sequence[TorrentFile],
    *,
    trackers: Sequence[str] = (),
    web_seeds: Sequence[str] = (),
    v1_only: bool = False,
) -> bytes:
    """Bencoded metainfo for ``files`` (in canonical order) under directory ``name``."""
    v1_files: list[dict[str, Any]] = []
    tree: dict[str, Any] = {}
    layers: dict[bytes, bytes] = {}
    for f in files:
        v1_files.append({"length": f.size, "path": list(f.path.parts)})
        pad = -f.size % piece_length if pads_last_piece(len(files)) else 0
        if pad:
            v1_files.append({"attr": "p", "length": pad, "path": [PAD_DIR, str(pad)]})
        if v1_only:
            continue
        node = tree
        for part in f.path.parts:
            node = node.setdefault(part, {})
        leaf: dict[str, Any] = {"length": f.size}
        if f.size:
            assert f.pieces_root is not None
            leaf["pieces root"] = f.pieces_root
            if f.size > piece_length:
                layers[f.pieces_root] = f.piece_layer
        node[""] = leaf
    info: dict[str, Any] = {
        "files": v1_files,
        "name": name,
        "piece length": piece_length,
        "pieces": b"".join(f.pieces_v1 for f in files),
    }
    if not v1_only:
        info["file tree"] = tree
        info["meta version"] = 2
    meta: dict[str, Any] = {"created by": f"shoal {__version__}", "info": info}
    if trackers:
        meta["announce"] = trackers[0]
        meta["announce-list"] = [[t] for t in trackers]
    if layers:
        meta["piece layers"] = layers
    if web_seeds:
        meta["url-list"] = list(web_seeds)
    return bencode.encode(meta)


@dataclass(frozen=True, slots=True)
class Torrent:
    """A loaded torrent: what a coordinator and a peer need to check it."""

    name: str
    piece_length: int
    files: tuple[tuple[RelPath, int], ...]  # without pad files
    file_indices: tuple[int, ...]  # each of those files' index among all, pads included
    info_hash_v1: bytes
    info_hash_v2: bytes | None
    trackers: tuple[str, ...]
    web_seeds: tuple[str, ...]

    @classmethod
    def load(cls, data: bytes) -> Torrent:
        """Decode and validate; raises ``InvalidTorrent``."""
        try:
            meta = bencode.decode(data, max_size=MAX_TORRENT_BYTES)
        except bencode.BencodeError as exc:
            raise InvalidTorrent(f"torrent is not valid bencoding: {exc}") from None
        try:
            return _from_meta(meta)
        except InvalidTorrent:
            raise
        except (BadInput, UnicodeDecodeError, TypeError, ValueError) as exc:
            raise InvalidTorrent(f"invalid torrent: {exc}") from None

    @classmethod
    def from_info(cls, info: bytes) -> Torrent:
        """A torrent known by its info dictionary alone (fetched from peers by its
        info-hash, BEP 9): validated as ``load`` does, but for the v2 piece layers, which
        live outside it (libtorrent asks peers for them, checked against each root)."""
        try:
            decoded = bencode.decode(info, max_size=MAX_TORRENT_BYTES)
        except bencode.BencodeError as exc:
            raise InvalidTorrent(f"torrent info is not valid bencoding: {exc}") from None
        try:
            return _from_meta({b"info": decoded}, layers=False)
        except InvalidTorrent:
            raise
        except (BadInput, UnicodeDecodeError, TypeError, ValueError) as exc:
            raise InvalidTorrent(f"invalid torrent: {exc}") from None

    def check_matches(self, manifest: Manifest) -> None:
        """Raise ``InvalidTorrent`` unless this torrent describes exactly ``manifest``."""
        if self.info_hash_v1 != manifest.info_hash_v1:
            raise InvalidTorrent("torrent's v1 info-hash differs from the manifest's")
        if self.info_hash_v2 != manifest.info_hash_v2:
            raise InvalidTorrent("torrent's v2 info-hash differs from the manifest's")
        if self.piece_length != manifest.chunk_size:
            raise InvalidTorrent("torrent's piece length differs from the manifest's chunk size")
        if self.files != tuple((f.path, f.size) for f in manifest.files):
            raise InvalidTorrent("torrent's files differ from the manifest's")


def _from_meta(meta: Any, layers: bool = True) -> Torrent:
    if not isinstance(meta, dict) or not isinstance(meta.get(b"info"), dict):
        raise InvalidTorrent("torrent has no info dictionary")
    info = meta[b"info"]
    encoded = bencode.encode(info)
    plen = info.get(b"piece length")
    if type(plen) is not int or plen < MIN_CHUNK_SIZE or plen > MAX_CHUNK_SIZE or plen & (plen - 1):
        raise InvalidTorrent(f"invalid piece length {plen!r}")
    name = _text(info.get(b"name"), "name")
    RelPath(name)
    raw_files = info.get(b"files")
    if not isinstance(raw_files, list) or len(raw_files) > 2 * MAX_FILES:
        raise InvalidTorrent("torrent must list its files (multi-file form)")
    files: list[tuple[RelPath, int]] = []
    expected_pieces = 0
    offset = 0
    indices: list[int] = []
    for index, raw in enumerate(raw_files):
        if not isinstance(raw, dict):
            raise InvalidTorrent("torrent file entry is not a dictionary")
        length = raw.get(b"length")
        if type(length) is not int or length < 0:
            raise InvalidTorrent(f"invalid file length {length!r}")
        parts = raw.get(b"path")
        if not isinstance(parts, list):
            raise InvalidTorrent("torrent file entry has no path")
        attr = raw.get(b"attr", b"")
        if attr not in (b"", b"p"):  # "l" (symlink), "x", "h": nothing a model holds
            raise InvalidTorrent(f"file attribute {attr!r} is not allowed (only BEP 47 pads)")
        if attr == b"p":
            if offset % plen == 0 or (offset + length) % plen:
                raise InvalidTorrent("pad file does not end a piece")
        else:
            if offset % plen:
                raise InvalidTorrent("file does not start on a piece boundary")
            files.append((RelPath.from_parts([_text(p, "path") for p in parts]), length))
            indices.append(index)
            expected_pieces += chunk_count(length, plen)
        offset += length
    if expected_pieces > MAX_CHUNKS:
        raise InvalidTorrent(f"torrent has more than {MAX_CHUNKS} pieces")
    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes) or len(pieces) != 20 * expected_pieces:
        raise InvalidTorrent("torrent's piece hashes do not match its files")
    v2 = None
    if info.get(b"meta version") == 2:
        v2 = hashlib.sha256(encoded).digest()
        _check_v2(info, meta.get(b"piece layers", {}) if layers else None, files, plen)
    elif b"piece layers" in meta or b"file tree" in info:
        raise InvalidTorrent("v2 fields in a torrent without 'meta version' 2")
    trackers = [_text(t, "announce") for t in [meta.get(b"announce", b"")] if t]
    for tier in meta.get(b"announce-list", []):
        trackers.extend(_text(t, "announce") for t in tier if _text(t, "announce") not in trackers)
    seeds = meta.get(b"url-list", [])
    seeds = [seeds] if isinstance(seeds, bytes) else seeds
    return Torrent(
        name=name,
        piece_length=plen,
        files=tuple(files),
        file_indices=tuple(indices),
        info_hash_v1=hashlib.sha1(encoded, usedforsecurity=False).digest(),
        info_hash_v2=v2,
        trackers=tuple(trackers),
        web_seeds=tuple(_text(s, "url-list") for s in seeds),
    )


def _check_v2(
    info: dict[bytes, Any], layers: Any, files: list[tuple[RelPath, int]], plen: int
) -> None:
    """The v2 half of a hybrid torrent describes the same files as its v1 half, and every
    piece layer (outside the info dict, so outside both info-hashes) hashes up to its
    file's ``pieces root``: swapped layers would make libtorrent fail good pieces.
    ``layers`` None: not known yet (only the info dictionary is)."""
    leaves: list[tuple[RelPath, int, bytes | None]] = []
    _walk_tree(info.get(b"file tree"), [], leaves)
    if [(p, n) for p, n, _ in leaves] != files:
        raise InvalidTorrent("torrent's v2 file tree differs from its v1 file list")
    if layers is None:
        return
    if not isinstance(layers, dict):
        raise InvalidTorrent("torrent's 'piece layers' is not a dictionary")
    wanted: set[bytes] = set()
    for path, size, root in leaves:
        if size <= plen:
            continue
        assert root is not None
        layer = layers.get(root)
        count = chunk_count(size, plen)
        if not isinstance(layer, bytes) or len(layer) != 32 * count:
            raise InvalidTorrent(f"torrent's piece layer of {path} is missing or malformed")
        hashes = [layer[i : i + 32] for i in range(0, len(layer), 32)]
        if merkle.file_root(hashes, plen) != root:
            raise InvalidTorrent(f"torrent's piece layer of {path} does not match its root")
        wanted.add(root)
    if set(layers) - wanted:
        raise InvalidTorrent("torrent's 'piece layers' holds layers of no file")


def _walk_tree(node: Any, parts: list[str], out: list[tuple[RelPath, int, bytes | None]]) -> None:
    """The files of a BEP 52 file tree, in its (sorted) order; depth is bounded by the
    bencode decoder."""
    if not isinstance(node, dict) or not node:
        raise InvalidTorrent("torrent's file tree is malformed")
    for key, child in node.items():
        if key == b"":
            if len(node) != 1 or not isinstance(child, dict) or not parts:
                raise InvalidTorrent("torrent's file tree is malformed")
            size = child.get(b"length")
            root = child.get(b"pieces root")
            if type(size) is not int or size < 0:
                raise InvalidTorrent(f"invalid file length {size!r} in the file tree")
            if size and (not isinstance(root, bytes) or len(root) != 32):
                raise InvalidTorrent("a file in the file tree has no 32-byte pieces root")
            out.append((RelPath.from_parts(parts), size, root if size else None))
            if len(out) > MAX_FILES:
                raise InvalidTorrent(f"torrent has more than {MAX_FILES} files")
        else:
            _walk_tree(child, [*parts, _text(key, "file tree")], out)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, bytes):
        raise InvalidTorrent(f"torrent field {what!r} must be a string")
    return value.decode()
