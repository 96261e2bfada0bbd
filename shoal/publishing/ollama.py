"""Reading a model out of ollama's own store (``manifests/`` + ``blobs/``).

The published model holds every blob as ``blobs/sha256-<hex>`` with its
layer's media type, plus ollama's manifest JSON itself as
``ollama-manifest.json``, so a pull can put the model back where ``ollama run``
finds it without re-deriving anything. Each blob's size is checked here; its
digest is checked by the publisher while it hashes (``SourceFile.expected``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from shoal import ollama_manifest as om
from shoal.digest import Digest
from shoal.errors import BadInput, SourceError
from shoal.publishing.sources import Source, SourceFile, canonical
from shoal.ref import ModelRef
from shoal.relpath import RelPath

MANIFEST_PATH = "ollama-manifest.json"
_MAX_MANIFEST = 4 << 20


def default_models_dir() -> Path:
    """``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env) if env else Path.home() / ".ollama" / "models"


def ollama_source(name: str, models: Path) -> Source:
    """The model ``name`` (``[host/][ns/]model[:tag]``) from the store at ``models``.

    The manifest is carried byte for byte. A manifest list carries the blobs of its
    first runnable child (``ollama``, ``llamacpp``), which must all be here, and of every
    other child whose blobs all are (a child manifest by digest is a blob too)."""
    ref = ModelRef.parse(name)
    manifest_path = models / "manifests" / ref.ollama_path
    raw = _read_small(
        manifest_path,
        f"ollama model {ref} is not in {models}",
        "run 'ollama pull' first, or pass --ollama-models DIR",
    )
    where = str(manifest_path)
    try:
        doc = om.parse(raw, where)
        if om.is_list(doc):
            needed = _list_blobs(doc, models, where)
            media: str | None = om.LIST_MEDIA_TYPE
        else:
            needed = om.blobs(doc, where)
            media = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else None
    except SourceError:
        raise
    except BadInput as exc:
        raise SourceError(exc.message, exc.hint) from None
    files: dict[Digest, SourceFile] = {}
    for b in needed:
        if b.digest not in files:
            files[b.digest] = SourceFile(
                rel=RelPath(f"blobs/{b.digest.filename}"),
                size=b.size,
                path=_blob(models, b.digest, b.size),
                media_type=b.media_type,
                expected=b.digest,
            )
    man = SourceFile(
        rel=RelPath(MANIFEST_PATH),
        size=len(raw),
        data=raw,
        media_type=media or om.MANIFEST_MEDIA_TYPE,
    )
    return Source(
        description=f"ollama:{ref} in {models}",
        files=canonical([*files.values(), man]),
        default_ref=ref,
        root=None,
    )


def _list_blobs(doc: dict[str, Any], models: Path, where: str) -> list[om.Blob]:
    kids = om.children(doc, where)
    if not kids or not om.runnable(kids[0]):
        runners = sorted({str(c.runner) for c in kids})
        raise SourceError(
            f"ollama manifest list {where} has no child for runner "
            f"{' or '.join(om.RUNNABLE)} (found: {', '.join(runners) or 'none'})",
            "publish a model variant built for the ollama or llama.cpp runner",
        )
    needed = _child_blobs(kids[0], models, where, required=True)
    for child in kids[1:]:
        needed += _child_blobs(child, models, where, required=False)
    return needed


def _child_blobs(child: om.Child, models: Path, where: str, *, required: bool) -> list[om.Blob]:
    """What ``child`` needs from the store: its manifest blob (if by digest) and layers.
    Missing pieces fail a ``required`` child and drop any other."""
    own: list[om.Blob] = []
    doc = child.doc
    if child.ref is not None:
        path = models / "blobs" / child.ref.digest.filename
        if not _present(path, child.ref.size):
            if required:
                _blob(models, child.ref.digest, child.ref.size)  # raises, naming the blob
            return []
        raw = _read_small(path, f"cannot read child manifest {child.ref.digest}", "re-pull")
        if Digest.of(raw) != child.ref.digest:
            raise SourceError(
                f"child manifest blob {path} does not match its digest",
                "the ollama store is damaged: re-pull the model with ollama",
            )
        doc = om.parse(raw, str(path))
        own.append(om.Blob(child.ref.digest, child.ref.size, om.MANIFEST_MEDIA_TYPE))
    assert doc is not None
    layers = om.blobs(doc, where)
    if not all(_present(models / "blobs" / b.digest.filename, b.size) for b in layers):
        if required:
            for b in layers:
                _blob(models, b.digest, b.size)  # raises, naming the first missing one
        return []
    return own + layers


def _present(path: Path, size: int) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


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
