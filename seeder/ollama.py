"""Reading a model out of ollama's own store (``manifests/`` + ``blobs/``).

The published model holds every blob as ``blobs/sha256-<hex>`` with its
layer's media type, plus ollama's manifest JSON itself as
``ollama-manifest.json``, so a pull can put the model back where ``ollama run``
finds it without re-deriving anything. Each blob's size is checked here; its
digest is checked by the publisher while it hashes (``SourceFile.expected``).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from seeder.sources import Source, SourceFile, canonical
from shoal.digest import Digest
from shoal.errors import BadInput, SourceError
from shoal.ref import ModelRef
from shoal.relpath import RelPath

MANIFEST_PATH = "ollama-manifest.json"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
LIST_MEDIA_TYPE = "application/vnd.ollama.manifest.list.v2+json"
RUNNER_PREFERENCE = ("ollama", "llamacpp")
_MAX_MANIFEST = 4 << 20


def default_models_dir() -> Path:
    """``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env) if env else Path.home() / ".ollama" / "models"


def ollama_source(name: str, models: Path) -> Source:
    """The model ``name`` (``[host/][ns/]model[:tag]``) from the store at ``models``."""
    ref = ModelRef.parse(name)
    manifest_path = models / "manifests" / ref.ollama_path
    raw = _read_small(
        manifest_path,
        f"ollama model {ref} is not in {models}",
        "run 'ollama pull' first, or pass --ollama-models DIR",
    )
    doc = _json(raw, manifest_path)
    if doc.get("mediaType") == LIST_MEDIA_TYPE or "manifests" in doc:
        raw, doc = _runnable_child(doc, models, manifest_path)
    files: dict[Digest, SourceFile] = {}
    for layer in [_field(doc, "config", manifest_path), *_layers(doc, manifest_path)]:
        digest, size, media_type = _layer(layer, manifest_path)
        if digest in files:
            continue
        blob = _blob(models, digest, size)
        files[digest] = SourceFile(
            rel=RelPath(f"blobs/{digest.filename}"),
            size=size,
            path=blob,
            media_type=media_type,
            expected=digest,
        )
    media = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else None
    man = SourceFile(
        rel=RelPath(MANIFEST_PATH),
        size=len(raw),
        data=raw,
        media_type=media or MANIFEST_MEDIA_TYPE,
    )
    return Source(
        description=f"ollama:{ref} in {models}",
        files=canonical([*files.values(), man]),
        default_ref=ref,
        root=None,
    )


def _runnable_child(doc: dict[str, Any], models: Path, where: Path) -> tuple[bytes, dict[str, Any]]:
    children = doc.get("manifests")
    if not isinstance(children, list):
        raise SourceError(f"ollama manifest list {where} has no 'manifests' array")
    for runner in RUNNER_PREFERENCE:
        for child in children:
            if not isinstance(child, dict) or child.get("runner") != runner:
                continue
            if "layers" in child:
                inline = {
                    k: v for k, v in child.items() if k not in ("runner", "format", "platform")
                }
                return json.dumps(inline, separators=(",", ":")).encode(), inline
            digest, size, _ = _layer(child, where)
            blob = _blob(models, digest, size)
            raw = _read_small(blob, f"cannot read child manifest {digest}", "re-pull with ollama")
            if Digest.of(raw) != digest:
                raise SourceError(
                    f"child manifest blob {blob} does not match its digest",
                    "the ollama store is damaged: re-pull the model with ollama",
                )
            return raw, _json(raw, blob)
    runners = sorted({str(c.get("runner")) for c in children if isinstance(c, dict)})
    raise SourceError(
        f"ollama manifest list {where} has no child for runner "
        f"{' or '.join(RUNNER_PREFERENCE)} (found: {', '.join(runners) or 'none'})",
        "publish a model variant built for the ollama or llama.cpp runner",
    )


def _layers(doc: dict[str, Any], where: Path) -> list[Any]:
    layers = _field(doc, "layers", where)
    if not isinstance(layers, list) or not layers:
        raise SourceError(f"ollama manifest {where} has no layers")
    return layers


def _layer(layer: Any, where: Path) -> tuple[Digest, int, str | None]:
    if not isinstance(layer, dict):
        raise SourceError(f"ollama manifest {where} has a layer that is not an object")
    try:
        digest = Digest.parse(layer.get("digest", ""))
    except BadInput as exc:
        raise SourceError(f"ollama manifest {where}: {exc.message}") from None
    size = layer.get("size")
    if type(size) is not int or size < 0:
        raise SourceError(f"ollama manifest {where}: layer {digest} has no valid size")
    media = layer.get("mediaType")
    if media is not None and not isinstance(media, str):
        raise SourceError(f"ollama manifest {where}: layer {digest} has a bad mediaType")
    return digest, size, media


def _blob(models: Path, digest: Digest, size: int) -> Path:
    blob = models / "blobs" / digest.filename
    try:
        st = blob.stat()
    except OSError:
        raise SourceError(
            f"blob {digest} is missing from {models / 'blobs'}",
            "the ollama store is incomplete: re-pull the model with ollama",
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"blob {blob} is not a regular file")
    if st.st_size != size:
        raise SourceError(
            f"blob {blob} is {st.st_size} bytes but its manifest says {size}",
            "the ollama store is damaged: re-pull the model with ollama",
        )
    return blob


def _field(doc: dict[str, Any], key: str, where: Path) -> Any:
    if key not in doc:
        raise SourceError(f"ollama manifest {where} has no '{key}'")
    return doc[key]


def _json(raw: bytes, where: Path) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"ollama manifest {where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SourceError(f"ollama manifest {where} is not a JSON object")
    return doc


def _read_small(path: Path, missing: str, hint: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_MANIFEST + 1)
    except FileNotFoundError:
        raise SourceError(missing, hint) from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_MANIFEST:
        raise SourceError(f"{path} is larger than {_MAX_MANIFEST} bytes; not an ollama manifest")
    return data
