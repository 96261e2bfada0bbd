"""The Hugging Face revision file: what a Hub snapshot carries, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import hf_revision
from shoal.errors import BadInput

C = "a" * 40


def test_of_snapshot_and_back(tmp_path: Path) -> None:
    repo = tmp_path / "models--o--n"
    (repo / "snapshots" / C).mkdir(parents=True)
    (repo / "refs" / "pr").mkdir(parents=True)
    (repo / "refs" / "main").write_text(C)
    (repo / "refs" / "pr" / "1").write_text(C + "\n")
    (repo / "refs" / "dev").write_text("b" * 40)
    data = hf_revision.of_snapshot(repo, repo / "snapshots" / C)
    assert data == b'{"commit":"' + C.encode() + b'","refs":["main","pr/1"]}'
    assert hf_revision.decode(data) == (C, ["main", "pr/1"])
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
    ],
)
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(BadInput):
        hf_revision.decode(data)
