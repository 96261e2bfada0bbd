import json
from pathlib import Path

import pytest

from shoal.digest import Digest
from shoal.errors import SourceError
from shoal.publishing.ollama import MANIFEST_PATH, ollama_source
from shoal.testing import write_ollama_store

MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"


def store(tmp_path: Path) -> tuple[Path, dict]:
    models = tmp_path / "models"
    doc = write_ollama_store(
        models, "tiny:1b", [(MODEL, b"G" * 5000), (TEMPLATE, b"{{ .Prompt }}")]
    )
    return models, doc


def test_reads_layers_with_media_types(tmp_path: Path) -> None:
    models, doc = store(tmp_path)
    src = ollama_source("tiny:1b", models)
    assert str(src.default_ref) == "library/tiny:1b"
    by_path = {f.rel.value: f for f in src.files}
    for layer in [doc["config"], *doc["layers"]]:
        f = by_path[f"blobs/{Digest.parse(layer['digest']).filename}"]
        assert f.media_type == layer["mediaType"]
        assert f.size == layer["size"]
        assert f.expected == Digest.parse(layer["digest"])
    man = by_path[MANIFEST_PATH]
    assert man.data == (models / "manifests/registry.ollama.ai/library/tiny/1b").read_bytes()


def test_missing_model_and_blob(tmp_path: Path) -> None:
    models, doc = store(tmp_path)
    with pytest.raises(SourceError, match="not in"):
        ollama_source("other:1b", models)
    blob = models / "blobs" / Digest.parse(doc["layers"][0]["digest"]).filename
    blob.unlink()
    with pytest.raises(SourceError, match="missing"):
        ollama_source("tiny:1b", models)


def test_size_mismatch(tmp_path: Path) -> None:
    models, doc = store(tmp_path)
    blob = models / "blobs" / Digest.parse(doc["layers"][0]["digest"]).filename
    blob.write_bytes(b"short")
    with pytest.raises(SourceError, match="manifest says 5000"):
        ollama_source("tiny:1b", models)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"layers": []}',
        b'{"config": {}, "layers": [{"digest": "sha256:../x"}]}',
    ],
)
def test_bad_manifest(tmp_path: Path, content: bytes) -> None:
    models, _ = store(tmp_path)
    (models / "manifests/registry.ollama.ai/library/tiny/1b").write_bytes(content)
    with pytest.raises(SourceError):
        ollama_source("tiny:1b", models)


def test_manifest_list_picks_runnable_child(tmp_path: Path) -> None:
    models, doc = store(tmp_path)
    child = json.dumps(doc).encode()
    child_digest = Digest.of(child)
    (models / "blobs" / child_digest.filename).write_bytes(child)
    listing = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.ollama.manifest.list.v2+json",
        "manifests": [
            {"runner": "mlx", "format": "safetensors", "digest": "sha256:" + "0" * 64, "size": 1},
            {
                "runner": "llamacpp",
                "format": "gguf",
                "digest": str(child_digest),
                "size": len(child),
            },
        ],
    }
    path = models / "manifests/registry.ollama.ai/library/tiny/1b"
    path.write_text(json.dumps(listing))
    src = ollama_source("tiny:1b", models)
    by_path = {f.rel.value: f for f in src.files}
    # the list as ollama wrote it (issue 27: it had been replaced by the child)
    assert by_path[MANIFEST_PATH].data == path.read_bytes()
    assert f"blobs/{child_digest.filename}" in by_path  # the child manifest is a blob too
    for layer in [doc["config"], *doc["layers"]]:
        assert f"blobs/{Digest.parse(layer['digest']).filename}" in by_path
    assert len(by_path) == 1 + 1 + 1 + len(doc["layers"])  # the mlx child is not here
    listing["manifests"] = listing["manifests"][:1]
    path.write_text(json.dumps(listing))
    with pytest.raises(SourceError, match=r"no child for runner ollama or llamacpp \(found: mlx\)"):
        ollama_source("tiny:1b", models)
