"""The pull side of the OCI distribution API as values, without I/O: which request a path
is, the spec's error bodies, and the manifest a model that came from no registry is
served as.

Paths (distribution-spec, "Pulling"):

    /v2/                                        the API is here
    /v2/<name>/manifests/<tag or digest>        GET, HEAD
    /v2/<name>/blobs/<digest>                   GET (no Range: 307 to the data URL), HEAD
    /v2/<name>/blobs/<digest>/data              the data URL: GET with or without Range

``<name>`` is a repository: shoal holds ``namespace/name`` (ollama's two parts); a
one-part name is in ``library``, as ollama and Docker read it. The registry host the
model is named under comes from containerd's ``?ns=`` when a mirror request carries it,
else it is ollama's default. Every part is validated before it names anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from shoal.digest import Digest
from shoal.errors import BadInput, InvalidDigest, InvalidRef
from shoal.manifest import Manifest
from shoal.ref import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelRef

MAX_PATH = 1024  # longer request paths are refused before any parsing
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.shoal.model.v1"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"  # the spec's empty descriptor: the config of an artifact
EMPTY_DIGEST = Digest.of(EMPTY_CONFIG)
TITLE = "org.opencontainers.image.title"
EMPTY_FILES = "io.shoal.empty-files"  # a JSON list of the paths of the model's empty files
OCTET_STREAM = "application/octet-stream"

# distribution-spec: a repository name is path components of [a-z0-9] runs joined by
# separators; ollama's names also hold capitals, which shoal's ModelRef accepts.
_COMPONENT = re.compile(r"[A-Za-z0-9]+(?:(?:\.|_|__|-+)[A-Za-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class Base:
    """``/v2/``."""


@dataclass(frozen=True, slots=True)
class ManifestReq:
    name: str  # namespace/name
    tag: str | None
    digest: Digest | None

    def ref(self, host: str | None) -> ModelRef:
        """The model a by-tag request names (``host`` from ``?ns=``, else ollama's)."""
        assert self.tag is not None
        namespace, _, model = self.name.partition("/")
        try:
            return ModelRef(host or DEFAULT_HOST, namespace, model, self.tag)
        except InvalidRef as exc:
            raise MirrorError(400, "NAME_INVALID", exc.message) from None


@dataclass(frozen=True, slots=True)
class BlobReq:
    name: str
    digest: Digest
    data: bool  # the data URL, not the registry's blob URL


Route = Base | ManifestReq | BlobReq


class MirrorError(BadInput):
    """An answer in the spec's error form: ``{"errors": [{"code", "message"}]}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def body(self) -> bytes:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def route(path: str) -> Route:
    """What ``path`` asks for; ``MirrorError`` (400 or 404) for anything else."""
    if len(path) > MAX_PATH:
        raise MirrorError(400, "NAME_INVALID", f"request path longer than {MAX_PATH} bytes")
    if path in ("/v2", "/v2/"):
        return Base()
    if not path.startswith("/v2/"):
        raise MirrorError(404, "NAME_UNKNOWN", "this mirror answers /v2/ only")
    parts = path[4:].split("/")
    data = parts[-1] == "data" and len(parts) >= 4 and parts[-3] == "blobs"
    if data:
        parts = parts[:-1]
    if len(parts) < 3 or parts[-2] not in ("manifests", "blobs"):
        raise MirrorError(404, "NAME_UNKNOWN", f"no such API path: {path[:200]!r}")
    kind, reference = parts[-2], parts[-1]
    name = _name(parts[:-2])
    if kind == "blobs":
        return BlobReq(name, _digest(reference), data)
    if reference.startswith("sha256:") or ":" in reference:
        return ManifestReq(name, None, _digest(reference))
    if not _TAG.fullmatch(reference):
        raise MirrorError(400, "TAG_INVALID", f"invalid tag {reference[:200]!r}")
    return ManifestReq(name, reference, None)


def registry_host(ns: str | None) -> str | None:
    """containerd's ``?ns=<registry>``, validated as a model reference's host."""
    if ns is None:
        return None
    try:
        return ModelRef(ns, DEFAULT_NAMESPACE, "x", "latest").host
    except InvalidRef:
        raise MirrorError(400, "NAME_INVALID", f"invalid registry in ?ns={ns[:200]!r}") from None


def _name(components: list[str]) -> str:
    text = "/".join(components)
    if not components or not all(_COMPONENT.fullmatch(c) for c in components):
        raise MirrorError(400, "NAME_INVALID", f"invalid repository name {text[:200]!r}")
    if len(components) == 1:
        components = [DEFAULT_NAMESPACE, *components]
    if len(components) != 2 or "." in components[0]:
        raise MirrorError(
            404,
            "NAME_UNKNOWN",
            f"no repository {text[:200]!r}: models here are named namespace/name",
        )
    return "/".join(components)


def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except InvalidDigest:
        raise MirrorError(
            400, "DIGEST_INVALID", f"invalid digest {text[:200]!r}: expected sha256:<64 hex>"
        ) from None


def artifact_manifest(m: Manifest) -> bytes:
    """The OCI manifest of a model that came from no registry: an artifact with one layer
    per file, titled with its path. Made from the shoal manifest alone and written in one
    form (sorted keys, no spaces), so every host serves the same bytes: its digest is the
    same fleet-wide. Empty files are named in the annotation ``EMPTY_FILES`` instead of
    as layers: containerd refuses to fetch a descriptor of size 0."""
    empty = [f.path.value for f in m.files if not f.size]
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": str(EMPTY_DIGEST),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {
                "mediaType": f.media_type or OCTET_STREAM,
                "digest": str(f.sha256),
                "size": f.size,
                "annotations": {TITLE: f.path.value},
            }
            for f in m.files
            if f.size
        ],
        "annotations": {
            "io.shoal.manifest": str(m.digest),
            **({EMPTY_FILES: json.dumps(empty, separators=(",", ":"))} if empty else {}),
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def media_type(raw: bytes) -> str:
    """A manifest's ``mediaType`` (what ``Content-Type`` says), docker v2 when it has none."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return DOCKER_MANIFEST
    value = doc.get("mediaType") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and len(value) <= 255 else DOCKER_MANIFEST
