"""ollama's manifest JSON, without I/O: a plain manifest, or a list of per-runner children.

A plain manifest names a config and layers by digest and size. A manifest list
(``application/vnd.ollama.manifest.list.v2+json``) holds children, each for a ``runner``
(``ollama``, ``llamacpp``, ``mlx``...), inline (with its own layers) or by the digest of
a blob holding the child manifest. shoal runs none of them; it only has to carry the
bytes: the manifest as ollama wrote it, and the blobs its children need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shoal.digest import Digest
from shoal.errors import BadInput

LIST_MEDIA_TYPE = "application/vnd.ollama.manifest.list.v2+json"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
RUNNABLE = ("ollama", "llamacpp")  # children that run on any host, first preferred


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob a manifest names: its digest, size and media type."""

    digest: Digest
    size: int
    media_type: str | None


@dataclass(frozen=True, slots=True)
class Child:
    """One child of a manifest list: its runner, and its manifest inline (``doc``) or in
    the blob ``ref``."""

    runner: str | None
    doc: dict[str, Any] | None
    ref: Blob | None


def parse(raw: bytes, where: str) -> dict[str, Any]:
    """A manifest or manifest list as a JSON object; ``BadInput`` otherwise."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"ollama manifest {where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"ollama manifest {where} is not a JSON object")
    return doc


def is_list(doc: dict[str, Any]) -> bool:
    return doc.get("mediaType") == LIST_MEDIA_TYPE or "manifests" in doc


def blobs(doc: dict[str, Any], where: str) -> list[Blob]:
    """The config and layers of a plain manifest, validated."""
    if "config" not in doc:
        raise BadInput(f"ollama manifest {where} has no 'config'")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise BadInput(f"ollama manifest {where} has no layers")
    return [blob(item, where) for item in [doc["config"], *layers]]


def blob(item: Any, where: str) -> Blob:
    if not isinstance(item, dict):
        raise BadInput(f"ollama manifest {where} has a layer that is not an object")
    digest = Digest.parse(item.get("digest", ""))
    size = item.get("size")
    if type(size) is not int or size < 0:
        raise BadInput(f"ollama manifest {where}: layer {digest} has no valid size")
    media = item.get("mediaType")
    if media is not None and not isinstance(media, str):
        raise BadInput(f"ollama manifest {where}: layer {digest} has a bad mediaType")
    return Blob(digest, size, media)


def children(doc: dict[str, Any], where: str) -> list[Child]:
    """The children of a manifest list, runnable ones first (in ``RUNNABLE`` order)."""
    items = doc.get("manifests")
    if not isinstance(items, list):
        raise BadInput(f"ollama manifest list {where} has no 'manifests' array")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise BadInput(f"ollama manifest list {where} has a child that is not an object")
        runner = item.get("runner") if isinstance(item.get("runner"), str) else None
        if "layers" in item:
            out.append(Child(runner, item, None))
        else:
            out.append(Child(runner, None, blob(item, where)))
    rank = {r: i for i, r in enumerate(RUNNABLE)}
    return sorted(out, key=lambda c: rank.get(c.runner or "", len(rank)))


def runnable(child: Child) -> bool:
    return child.runner in RUNNABLE
