import os
from pathlib import Path

import pytest

from shoal.errors import SourceError
from shoal.publishing.sources import directory_source, file_source


def paths(src) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.rel.value for f in src.files]


def test_directory_walk_is_canonical(tmp_path: Path) -> None:
    for rel in ["b", "a/z", "a/b/c", "A", "a-x"]:
        (tmp_path / "m" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / rel).write_bytes(rel.encode())
    src = directory_source(tmp_path / "m")
    assert paths(src) == ["A", "a/b/c", "a/z", "a-x", "b"]
    assert [f.size for f in src.files] == [1, 5, 3, 3, 1]


def test_symlink_inside_is_followed(tmp_path: Path) -> None:
    m = tmp_path / "m"
    (m / "real").mkdir(parents=True)
    (m / "real" / "w.bin").write_bytes(b"abc")
    (m / "link.bin").symlink_to("real/w.bin")
    (m / "dirlink").symlink_to("real")
    src = directory_source(m)
    assert paths(src) == ["dirlink/w.bin", "link.bin", "real/w.bin"]
    assert all(f.size == 3 for f in src.files)


@pytest.mark.parametrize("target", ["../outside.bin", "/etc/hostname"])
def test_symlink_escaping_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"secret")
    m = tmp_path / "m"
    m.mkdir()
    (m / "ok").write_bytes(b"1")
    (m / "evil").symlink_to(target)
    with pytest.raises(SourceError, match="points outside the source"):
        directory_source(m)


def test_dangling_and_loop(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    (m / "gone").symlink_to("nowhere")
    with pytest.raises(SourceError, match="dangling"):
        directory_source(m)
    (m / "gone").unlink()
    (m / "sub").mkdir()
    (m / "sub" / "up").symlink_to("..")
    with pytest.raises(SourceError, match="loop"):
        directory_source(m)


def test_special_files_and_empty(tmp_path: Path) -> None:
    m = tmp_path / "m"
    (m / "empty-sub").mkdir(parents=True)
    with pytest.raises(SourceError, match="contains no files"):
        directory_source(m)
    os.mkfifo(m / "fifo")
    with pytest.raises(SourceError, match="not a regular file"):
        directory_source(m)


def hf_snapshot(root: Path) -> Path:
    """The Hugging Face cache layout: snapshot files link into ../../blobs/."""
    repo = root / "models--org--repo"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    snap = repo / "snapshots" / "c0ffee"
    (snap / "sub").mkdir(parents=True)
    (repo / "blobs" / "aaa").write_bytes(b"weights")
    (repo / "blobs" / "bbb").write_bytes(b"{}")
    (snap / "model.safetensors").symlink_to("../../blobs/aaa")
    (snap / "sub" / "config.json").symlink_to("../../../blobs/bbb")
    return snap


def test_hugging_face_snapshot(tmp_path: Path) -> None:
    snap = hf_snapshot(tmp_path)
    src = directory_source(snap)
    assert paths(src) == ["model.safetensors", "sub/config.json"]
    assert [f.size for f in src.files] == [7, 2]


def test_hugging_face_link_out_of_repo_is_refused(tmp_path: Path) -> None:
    snap = hf_snapshot(tmp_path)
    (tmp_path / "other").write_bytes(b"x")
    (snap / "evil").symlink_to("../../../other")
    with pytest.raises(SourceError, match="points outside"):
        directory_source(snap)


def test_file_source(tmp_path: Path) -> None:
    f = tmp_path / "w.gguf"
    f.write_bytes(b"12345")
    src = file_source(f)
    assert paths(src) == ["w.gguf"] and src.files[0].size == 5
    with pytest.raises(SourceError, match="cannot read"):
        file_source(tmp_path / "missing")


def test_unpublishable_name(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    (m / "bad\\name").write_bytes(b"x")
    with pytest.raises(SourceError, match="backslash"):
        directory_source(m)
