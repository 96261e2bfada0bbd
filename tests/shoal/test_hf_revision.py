"""The Hugging Face revision file: what a Hub snapshot carries, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import hf_revision
from shoal.errors import BadInput, IntegrityError
from shoal.hfrepo import HfRepo, git_blob_sha1

C = "a" * 40


def test_of_snapshot_and_back(tmp_path: Path) -> None:
    repo = tmp_path / "models--o--n"
    (repo / "snapshots" / C).mkdir(parents=True)
    (repo / "refs" / "pr").mkdir(parents=True)
    (repo / "refs" / "main").write_text(C)
    (repo / "refs" / "pr" / "1").write_text(C + "\n")
    (repo / "refs" / "dev").write_text("b" * 40)
    data = hf_revision.of_snapshot(repo, repo / "snapshots" / C)
    assert data is not None
    assert data.startswith(b'{"commit":"' + C.encode() + b'","etags":{},"gated":false')
    rev = hf_revision.Revision.decode(data)
    assert (rev.commit, rev.refs, rev.repo) == (C, ("main", "pr/1"), HfRepo("model", "o/n"))
    old = b'{"commit":"' + C.encode() + b'","refs":["main"]}'  # written before repos were
    assert hf_revision.Revision.decode(old) == hf_revision.Revision(C, ("main",))
    assert hf_revision.of_snapshot(repo, repo / "snapshots") is None
    (repo / "snapshots" / "notacommit").mkdir()
    assert hf_revision.of_snapshot(repo, repo / "snapshots" / "notacommit") is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"commit": "abc", "refs": []}',
        b'{"commit": "' + C.encode() + b'"}',
        b'{"commit": "' + C.encode() + b'", "refs": ["../../etc/passwd"]}',
        b'{"commit": "' + C.encode() + b'", "refs": ["/abs"]}',
        b'{"commit": "' + C.encode() + b'", "refs": ["a/b/c/d/e"]}',
        b'{"commit": "' + C.encode() + b'", "refs": [1]}',
        b'{"commit": "' + C.encode() + b'", "refs": [], "repo": "../x", "kind": "model"}',
        b'{"commit": "' + C.encode() + b'", "refs": [], "repo": "o/n", "kind": "space"}',
        b'{"commit":"' + C.encode() + b'","refs":[],"repo":"o/n","kind":"model","gated":false,'
        b'"etags":{"a":"not-hex"}}',
        b'{"commit":"' + C.encode() + b'","refs":[],"repo":"o/n","kind":"model","gated":1,'
        b'"etags":{}}',
        b" " * (hf_revision.MAX_BYTES + 1),
    ],
)
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(BadInput):
        hf_revision.Revision.decode(data)


def test_the_etags_are_the_blobs_the_snapshot_links_to(tmp_path: Path) -> None:
    repo = tmp_path / "datasets--o--n"
    small, big = b"small", b"big" * 1000
    import hashlib

    names = {"a.txt": git_blob_sha1(small), "w/b.bin": hashlib.sha256(big).hexdigest()}
    (repo / "blobs").mkdir(parents=True)
    for path, name in names.items():
        (repo / "blobs" / name).write_bytes(small if path == "a.txt" else big)
        link = repo / "snapshots" / C / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * path.count("/")) / "../../blobs" / name)
    (repo / "snapshots" / C / "plain.txt").write_text("not a link: no ETag")
    data = hf_revision.of_snapshot(repo, repo / "snapshots" / C)
    assert data is not None
    rev = hf_revision.Revision.decode(data)
    assert rev.repo == HfRepo("dataset", "o/n") and rev.etags == names
    assert rev.encode() == data


def test_an_etag_is_proven_against_the_bytes() -> None:
    data = b"hello"
    sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert hf_revision.proven_etag(None, sha, lambda: data) == sha
    assert hf_revision.proven_etag(git_blob_sha1(data), sha, lambda: data) == git_blob_sha1(data)
    for lie in ("0" * 40, "0" * 64):
        with pytest.raises(IntegrityError):
            hf_revision.proven_etag(lie, sha, lambda: data)
