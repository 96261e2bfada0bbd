"""Our torrent builder against libtorrent's own, byte for byte in the info-hashes."""

import hashlib
import warnings
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from shoal import bencode, torrent
from shoal.errors import InvalidTorrent
from shoal.publishing.hashing import Hasher
from shoal.relpath import RelPath
from shoal.testing import manifest_fixture, write_blob

KiB = 1024

CASES = {
    "tricky": {
        "a": 0,
        "b": 1,
        "c/d": 16 * KiB - 1,
        "c/e": 16 * KiB,
        "f": 16 * KiB + 1,
        "g": 64 * KiB,
        "h": 64 * KiB + 1,
        "i": 5 * 64 * KiB + 12345,
    },
    "single": {"model.gguf": 777_777},
    "powers": {"x": 256 * KiB, "y": 3 * 256 * KiB, "z/w": 1000},
}


def _ours(root: Path, files: dict[str, int], piece: int, v1_only: bool = False) -> bytes:
    tfiles = []
    with Hasher(piece, v2=not v1_only) as hasher:
        for rel in sorted(files, key=lambda p: RelPath(p).sort_key):
            with (root / rel).open("rb") as f:
                pad = torrent.pads_last_piece(len(files))
                h = hasher.hash_stream(f, files[rel], name=rel, pad_last=pad)
            tfiles.append(
                torrent.TorrentFile(RelPath(rel), h.size, h.pieces_v1, h.piece_layer, h.pieces_root)
            )
    return torrent.build(
        root.name,
        piece,
        tfiles,
        trackers=["http://t/announce"],
        web_seeds=["http://w/"],
        v1_only=v1_only,
    )


def _libtorrent(root: Path, piece: int) -> lt.torrent_info:
    fs = lt.file_storage()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lt.add_files(fs, str(root))
        ct = lt.create_torrent(fs, piece)
    lt.set_piece_hashes(ct, str(root.parent))
    return lt.torrent_info(ct.generate())


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("piece", [16 * KiB, 64 * KiB, 256 * KiB])
def test_hybrid_matches_libtorrent(tmp_path: Path, case: str, piece: int) -> None:
    files = CASES[case]
    root = tmp_path / "model-v1"
    for i, (rel, size) in enumerate(files.items()):
        write_blob(root / rel, size, seed=i)
    ours = _ours(root, files, piece)
    theirs = _libtorrent(root, piece)
    loaded = torrent.Torrent.load(ours)
    assert loaded.info_hash_v1 == bytes(theirs.info_hashes().v1.to_bytes())
    assert loaded.info_hash_v2 == bytes(theirs.info_hashes().v2.to_bytes())
    mine = lt.torrent_info(ours)
    assert mine.info_hashes() == theirs.info_hashes()
    assert loaded.files == tuple(
        (RelPath(r), files[r]) for r in sorted(files, key=lambda p: RelPath(p).sort_key)
    )
    assert loaded.trackers == ("http://t/announce",)
    assert loaded.web_seeds == ("http://w/",)


def test_v1_only_pieces_align_with_files(tmp_path: Path) -> None:
    files = CASES["tricky"]
    root = tmp_path / "m"
    for i, (rel, size) in enumerate(files.items()):
        write_blob(root / rel, size, seed=i)
    piece = 64 * KiB
    data = _ours(root, files, piece, v1_only=True)
    loaded = torrent.Torrent.load(data)
    assert loaded.info_hash_v2 is None
    info = lt.torrent_info(data)
    assert not info.info_hashes().has_v2()
    # every piece is one file's chunk, zero-padded: check each SHA-1 independently
    index = 0
    for rel in sorted(files, key=lambda p: RelPath(p).sort_key):
        blob = (root / rel).read_bytes()
        for start in range(0, len(blob), piece):
            chunk = blob[start : start + piece].ljust(piece, b"\0")
            assert bytes(info.hash_for_piece(index)) == hashlib.sha1(chunk).digest()
            index += 1
    assert index == info.num_pieces()


def test_check_matches_manifest() -> None:
    m = manifest_fixture({"a": b"x" * 20000})
    t = torrent.Torrent(
        "demo-latest",
        m.chunk_size,
        ((RelPath("a"), 20000),),
        (0,),
        m.info_hash_v1,
        m.info_hash_v2,
        (),
        (),
    )
    t.check_matches(m)
    bad = torrent.Torrent(
        "demo-latest",
        m.chunk_size,
        ((RelPath("a"), 20001),),
        (0,),
        m.info_hash_v1,
        m.info_hash_v2,
        (),
        (),
    )
    with pytest.raises(InvalidTorrent, match="files differ"):
        bad.check_matches(m)
    wrong_hash = torrent.Torrent(
        "demo-latest", m.chunk_size, t.files, (0,), bytes(20), m.info_hash_v2, (), ()
    )
    with pytest.raises(InvalidTorrent, match="v1 info-hash"):
        wrong_hash.check_matches(m)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"de",
        b"d4:infod4:name1:x12:piece lengthi3eee",
        b"d4:infod5:filesle4:name3:../12:piece lengthi16384e6:pieces0:ee",
        b"d4:infod5:filesld6:lengthi5e4:pathl2:..eee4:name1:x12:piece lengthi16384e"
        b"6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
        b"d4:infod5:filesld6:lengthi5e4:pathl1:aeee4:name1:x12:piece lengthi16384e6:pieces3:abcee",
        b"d4:infod5:filesld6:lengthi-5e4:pathl1:aeee4:name1:x12:piece lengthi16384e6:pieces0:ee",
    ],
)
def test_load_rejects(data: bytes) -> None:
    with pytest.raises(InvalidTorrent):
        torrent.Torrent.load(data)


def test_file_indices_skip_pads(tmp_path: Path) -> None:
    files = CASES["tricky"]
    root = tmp_path / "m"
    for i, (rel, size) in enumerate(files.items()):
        write_blob(root / rel, size, seed=i)
    loaded = torrent.Torrent.load(_ours(root, files, 64 * KiB))
    info = lt.torrent_info(_ours(root, files, 64 * KiB))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = info.files()
        names = [fs.file_path(i).split("/", 1)[1] for i in loaded.file_indices]
    assert names == [p.value for p, _ in loaded.files]


def _hybrid(tmp_path: Path) -> bytes:
    files = CASES["tricky"]
    root = tmp_path / "m"
    for i, (rel, size) in enumerate(files.items()):
        write_blob(root / rel, size, seed=i)
    return _ours(root, files, 16 * KiB)


def _changed(data: bytes, change: Any) -> bytes:
    meta = bencode.decode(data)
    change(meta)
    return bencode.encode(meta)


def test_libtorrents_own_hybrid_loads(tmp_path: Path) -> None:
    root = tmp_path / "model-v1"
    for i, (rel, size) in enumerate(CASES["tricky"].items()):
        write_blob(root / rel, size, seed=i)
    fs = lt.file_storage()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lt.add_files(fs, str(root))
        ct = lt.create_torrent(fs, 16 * KiB)
    lt.set_piece_hashes(ct, str(root.parent))
    assert torrent.Torrent.load(lt.bencode(ct.generate())).info_hash_v2 is not None


def _flip_layer(meta: Any) -> None:
    layers = meta[b"piece layers"]
    root = sorted(layers)[0]
    layers[root] = layers[root][:-1] + bytes([layers[root][-1] ^ 1])


def _drop_layer(meta: Any) -> None:
    del meta[b"piece layers"][sorted(meta[b"piece layers"])[0]]


def _extra_layer(meta: Any) -> None:
    meta[b"piece layers"][b"\x01" * 32] = b"\x02" * 32


def _resize_in_tree(meta: Any) -> None:
    meta[b"info"][b"file tree"][b"b"][b""][b"length"] = 2


def _symlink_attr(meta: Any) -> None:
    meta[b"info"][b"files"][0][b"attr"] = b"l"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_flip_layer, "does not match its root"),
        (_drop_layer, "missing or malformed"),
        (_extra_layer, "layers of no file"),
        (_resize_in_tree, "differs from its v1 file list"),
        (_symlink_attr, "attribute"),
    ],
)
def test_load_rejects_inconsistent_v2_and_attributes(tmp_path: Path, change: Any, why: str) -> None:
    """Audit defects 4 and 8: piece layers are outside both info-hashes, so they are checked
    against each file's pieces root; the v2 tree must list the v1 files; only pad files
    may carry an attribute."""
    good = _hybrid(tmp_path)
    torrent.Torrent.load(good)
    with pytest.raises(InvalidTorrent, match=why):
        torrent.Torrent.load(_changed(good, change))
