"""Exports read back by independent readers: an ollama-format reader written here, and
huggingface_hub itself (offline) for the HF cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from peer.export import export_hf, export_ollama
from peer.store import Store
from shoal.errors import BadInput
from shoal.publishing.ollama import ollama_source
from shoal.publishing.publish import PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import write_ollama_store
from tests.peer.test_store import fill, published


def read_ollama(models: Path, name: str) -> dict[str, bytes]:
    """What ollama does to find a model: manifest by name, then blobs by digest."""
    ref = ModelRef.parse(name)
    where = "/".join(p.lower() for p in (ref.host, ref.namespace, ref.name, ref.tag))
    doc = json.loads((models / "manifests" / where).read_text())
    out = {}
    for layer in [doc["config"], *doc["layers"]]:
        assert layer["digest"].startswith("sha256:")
        data = (models / "blobs" / layer["digest"].replace(":", "-")).read_bytes()
        assert len(data) == layer["size"]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
        out[layer["mediaType"]] = data
    return out


def test_ollama_model_round_trip(tmp_path: Path) -> None:
    origin = tmp_path / "ollama-origin"
    weights = os.urandom(200_000)
    doc = write_ollama_store(
        origin,
        "tiny:1b",
        [
            ("application/vnd.ollama.image.model", weights),
            ("application/vnd.ollama.image.template", b"T"),
        ],
    )
    pub = publish(
        ollama_source("tiny:1b", origin),
        PublishOptions(ref=ModelRef.parse("tiny:1b"), out=tmp_path / "pub"),
    )
    store = Store(tmp_path / "models").open()
    fill(store, pub)
    target = tmp_path / "ollama-here"
    path = export_ollama(store, ModelRef.parse("tiny:1b"), pub.manifest, target)
    assert (
        path.read_bytes() == (origin / "manifests/registry.ollama.ai/library/tiny/1b").read_bytes()
    )
    layers = read_ollama(target, "tiny:1b")
    assert layers["application/vnd.ollama.image.model"] == weights
    model_digest = doc["layers"][0]["digest"].replace(":", "-")
    assert (
        os.stat(target / "blobs" / model_digest).st_ino
        == os.stat(store.blobs / model_digest).st_ino
    )  # a hard link, not a copy


def test_single_gguf_gets_a_manifest(tmp_path: Path) -> None:
    pub = published(tmp_path, "m:q4", {"model.Q4.gguf": 50_000, "README.md": 10})
    store = Store(tmp_path / "models").open()
    fill(store, pub)
    export_ollama(store, ModelRef.parse("m:q4"), pub.manifest, tmp_path / "o")
    layers = read_ollama(tmp_path / "o", "m:q4")
    assert (
        layers["application/vnd.ollama.image.model"]
        == (tmp_path / "src-m:q4" / "model.Q4.gguf").read_bytes()
    )


def test_not_an_ollama_model(tmp_path: Path) -> None:
    pub = published(tmp_path, "m:1", {"a.safetensors": 100})
    store = Store(tmp_path / "models").open()
    fill(store, pub)
    with pytest.raises(BadInput, match="not an ollama model"):
        export_ollama(store, ModelRef.parse("m:1"), pub.manifest, tmp_path / "o")


def test_hf_cache_read_by_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    files = {"model.safetensors": 300_000, "config.json": 50, "tokenizer/tok.json": 2000}
    pub = published(tmp_path, "acme/tiny:main", files, seed=4)
    store = Store(tmp_path / "models").open()
    fill(store, pub)
    cache = tmp_path / "hf"
    snapshot = export_hf(store, ModelRef.parse("acme/tiny:main"), pub.manifest, cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = hub.snapshot_download("acme/tiny", cache_dir=str(cache), local_files_only=True)
    assert Path(got) == snapshot
    for rel in files:
        path = hub.try_to_load_from_cache("acme/tiny", rel, cache_dir=str(cache))
        assert Path(path).read_bytes() == (tmp_path / "src-acme/tiny:main" / rel).read_bytes()
    # small files are named like the Hub names them: git blob SHA-1
    data = (tmp_path / "src-acme/tiny:main" / "config.json").read_bytes()
    sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert (cache / "models--acme--tiny" / "blobs" / sha1).exists()


def test_exported_where_ollama_looks(tmp_path: Path) -> None:
    """Issue 27, item 2: a two-part name is namespace/name to ollama, and its manifest path
    is lowercased (ollama's Name.Filepath); ``localhost/Tiny:1B`` had gone to
    ``manifests/localhost/library/Tiny/1B``."""
    pub = published(tmp_path, "localhost/Tiny:1B", {"model.gguf": 5_000})
    store = Store(tmp_path / "models").open()
    fill(store, pub)
    ref = ModelRef.parse("localhost/Tiny:1B")
    path = export_ollama(store, ref, pub.manifest, tmp_path / "o")
    assert path == tmp_path / "o" / "manifests" / "registry.ollama.ai" / "localhost" / "tiny" / "1b"
    assert read_ollama(tmp_path / "o", "localhost/tiny:1b")


def test_inline_manifest_list_exported_byte_for_byte(tmp_path: Path) -> None:
    """Issue 27, item 2: an inline manifest list was exported re-serialized (539 B -> 411 B,
    ``runner`` and ``format`` dropped). It is carried and exported as ollama wrote it,
    with the blobs of its runnable child; a child whose blobs are not here is left out."""
    origin = tmp_path / "ollama-origin"
    weights = os.urandom(100_000)
    doc = write_ollama_store(origin, "tiny:1b", [("application/vnd.ollama.image.model", weights)])
    child = {"runner": "llamacpp", "format": "gguf", **doc}
    other = {
        "runner": "mlx",
        "format": "safetensors",
        "config": doc["config"],
        "layers": [{"mediaType": "x/y", "digest": "sha256:" + "1" * 64, "size": 7}],
    }
    listing = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.ollama.manifest.list.v2+json",
        "manifests": [other, child],
    }
    path = origin / "manifests/registry.ollama.ai/library/tiny/1b"
    path.write_text(json.dumps(listing, indent=1))  # any formatting: kept as it is
    pub = publish(
        ollama_source("tiny:1b", origin),
        PublishOptions(ref=ModelRef.parse("tiny:1b"), out=tmp_path / "pub"),
    )
    store = Store(tmp_path / "models").open()
    fill(store, pub)
    out = export_ollama(store, ModelRef.parse("tiny:1b"), pub.manifest, tmp_path / "o")
    assert out.read_bytes() == path.read_bytes()
    model = doc["layers"][0]["digest"].replace(":", "-")
    assert (tmp_path / "o" / "blobs" / model).read_bytes() == weights
    assert not (tmp_path / "o" / "blobs" / ("sha256-" + "1" * 64)).exists()


def _hub_snapshot(root: Path, repo: str, commit: str, files: dict[str, bytes]) -> Path:
    """A Hub cache snapshot as huggingface_hub lays one out: blobs, symlinks, refs."""
    d = root / ("models--" + repo.replace("/", "--"))
    for rel, data in files.items():
        blob = d / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = d / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for name in ("main", "v1"):
        (d / "refs" / name).parent.mkdir(parents=True, exist_ok=True)
        (d / "refs" / name).write_text(commit)
    (d / "refs" / "other").write_text("f" * 40)  # a ref to another commit: not carried
    return d / "snapshots" / commit


def test_hf_export_keeps_the_source_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27, item 3: a model published from a Hub snapshot and exported with --hf got
    a commit derived from the manifest, so hf_hub_download(revision=<the original
    commit>) failed offline. The commit and the refs that held it are carried."""
    hub = pytest.importorskip("huggingface_hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    files = {"config.json": b'{"a": 1}', "weights/model.safetensors": os.urandom(50_000)}
    snapshot = _hub_snapshot(tmp_path / "src-cache", "acme/tiny", commit, files)
    pub = publish(
        directory_source(snapshot),
        PublishOptions(ref=ModelRef.parse("acme/tiny:main"), out=tmp_path / "pub"),
    )
    store = Store(tmp_path / "models").open()
    fill(store, pub)
    cache = tmp_path / "hf"
    out = export_hf(store, ModelRef.parse("acme/tiny:main"), pub.manifest, cache)
    assert out.name == commit and not (out / ".shoal").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for revision in (commit, "main", "v1"):
        for rel, data in files.items():
            got = hub.hf_hub_download(
                "acme/tiny", rel, revision=revision, cache_dir=str(cache), local_files_only=True
            )
            assert Path(got).read_bytes() == data
    assert not (cache / "models--acme--tiny" / "refs" / "other").exists()
