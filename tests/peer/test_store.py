from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from peer.store import Store, StoreError
from shoal.errors import BadInput, IntegrityError
from shoal.publishing.publish import Published, PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import write_model_dir


def published(tmp_path: Path, name: str, files: dict[str, int], seed: int = 0) -> Published:
    src = write_model_dir(tmp_path / f"src-{name}", files, seed=seed)
    return publish(
        directory_source(src),
        PublishOptions(ref=ModelRef.parse(name), out=tmp_path / f"pub-{name}"),
    )


def fill(store: Store, pub: Published) -> int:
    """What a finished download does: each missing file verified, staged, committed."""
    moved = 0
    for entry in store.missing(pub.manifest):
        staged = store.staging_dir(pub.manifest) / entry.sha256.hex
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pub.out / "blobs" / entry.sha256.filename, staged)
        store.commit(entry, staged)
        moved += entry.size
    store.put(pub.manifest)
    return moved


def test_put_resolve_list_remove(tmp_path: Path) -> None:
    store = Store(tmp_path / "models").open()
    pub = published(tmp_path, "m:1", {"a.bin": 1000, "b.bin": 2000, "c/d": 0})
    assert fill(store, pub) == 3000
    assert store.resolve(ModelRef.parse("m:1")) == pub.manifest
    assert [str(r) for r, _ in store.models()] == ["library/m:1"]
    assert store.missing(pub.manifest) == []
    for f in pub.manifest.files:
        assert store.blob_path(f.sha256).stat().st_mode & 0o777 == 0o644
    assert store.remove(ModelRef.parse("m:1")) == 3000
    assert list(store.blobs.iterdir()) == []
    with pytest.raises(BadInput, match="not in"):
        store.remove(ModelRef.parse("m:1"))


def test_new_tag_moves_only_what_changed(tmp_path: Path) -> None:
    store = Store(tmp_path / "models").open()
    one = published(tmp_path, "m:1", {"a.bin": 5000, "b.bin": 6000, "c.bin": 7000}, seed=1)
    fill(store, one)
    src = tmp_path / "src-m:1"
    (src / "b.bin").write_bytes(os.urandom(6001))
    two = publish(
        directory_source(src), PublishOptions(ref=ModelRef.parse("m:2"), out=tmp_path / "pub-2")
    )
    assert [f.path.value for f in store.missing(two.manifest)] == ["b.bin"]
    assert fill(store, two) == 6001
    # removing :1 keeps what :2 still uses
    store.remove(ModelRef.parse("m:1"))
    assert store.missing(two.manifest) == []


def test_commit_checks_size_and_put_needs_every_blob(tmp_path: Path) -> None:
    store = Store(tmp_path / "models").open()
    pub = published(tmp_path, "m:1", {"a.bin": 1000})
    entry = pub.manifest.files[0]
    staged = store.staging / "x"
    staged.write_bytes(b"short")
    with pytest.raises(IntegrityError):
        store.commit(entry, staged)
    assert not store.blob_path(entry.sha256).exists()
    with pytest.raises(Exception, match="missing"):
        store.put(pub.manifest)


def test_space_and_permissions(tmp_path: Path) -> None:
    store = Store(tmp_path / "models").open()
    pub = published(tmp_path, "m:1", {"a.bin": 1000})
    assert store.check_space(pub.manifest) == 1000
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if os.geteuid() == 0 and os.system(f"mount -t tmpfs -o size=4k tmpfs {tiny}") == 0:
        try:
            big = published(tmp_path, "big:1", {"w": 1 << 20})
            with pytest.raises(StoreError, match=r"needs 1\.0 MiB more"):
                Store(tiny / "m").open().check_space(big.manifest)
        finally:
            os.system(f"umount {tiny}")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        Store(ro / "file" / "models").open()


def test_corrupt_manifest_file_is_not_trusted(tmp_path: Path) -> None:
    store = Store(tmp_path / "models").open()
    pub = published(tmp_path, "m:1", {"a.bin": 100})
    fill(store, pub)
    path = store.manifests / pub.manifest.digest.filename
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    assert store.resolve(ModelRef.parse("m:1")) is None
