"""``/v1`` registry routes: publish, resolve, manifests, torrents, models, history, delete."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import Response

from shoal import wire
from shoal.chunkmap import ChunkMap
from shoal.digest import Digest
from shoal.errors import BadInput, Conflict, NotFound
from shoal.manifest import MAX_MANIFEST_BYTES, Manifest
from shoal.ref import ModelRef
from shoal.signing import MAX_SIGNATURES, Signature
from shoal.torrent import MAX_TORRENT_BYTES, Torrent
from tracker.respond import read_body, respond, state_of, wants_json
from tracker.state import CoordinatorState
from tracker.stores.base import AuditEntry, Registry

router = APIRouter(prefix="/v1")

MANIFEST_MEDIA_TYPE = "application/vnd.shoal.manifest.v1+msgpack"
PUBLISH_LIMITS = wire.Limits(
    max_body=MAX_MANIFEST_BYTES + MAX_TORRENT_BYTES + 4096,
    max_bin=max(MAX_MANIFEST_BYTES, MAX_TORRENT_BYTES),
    max_map=8,
    max_depth=2,
)
_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

Auth = Annotated[str | None, Header(alias="authorization", include_in_schema=False)]
RefPath = Annotated[str, Path(description="Model reference, e.g. library/deepseek-r1:7b")]

_PUBLISH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            wire.MSGPACK: {
                "schema": {
                    "type": "object",
                    "required": ["manifest", "torrent"],
                    "properties": {
                        "ref": {"type": "string"},
                        "manifest": {"type": "string", "format": "binary"},
                        "torrent": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


@router.post("/models", status_code=201, openapi_extra=_PUBLISH_BODY)
async def publish(request: Request, authorization: Auth = None) -> Response:
    """Publish a manifest and its torrent under a tag (publisher token)."""
    state = state_of(request)
    who = state.auth.publisher(authorization)
    if request.headers.get("content-type", "").split(";")[0].strip() != wire.MSGPACK:
        raise BadInput(f"publish bodies are {wire.MSGPACK}")
    body = wire.unpack(await read_body(request, PUBLISH_LIMITS.max_body), PUBLISH_LIMITS)
    if not isinstance(body, dict):
        raise BadInput("publish body must be a map with manifest, torrent and ref")
    manifest, torrent_bytes = model_of(body)
    raw_ref = body.get("ref")
    if raw_ref is not None and not isinstance(raw_ref, str):
        raise BadInput("'ref' must be text")
    ref = ModelRef.parse(raw_ref) if raw_ref else manifest.ref
    signatures = signatures_of(body, manifest)
    answer = await register(state, ref, manifest, torrent_bytes, signatures)
    entry = AuditEntry(state.clock(), who, "publish", str(ref), str(manifest.digest))
    await state.registry.audit(entry)
    return respond(request, answer, 201)


def model_of(body: dict[Any, Any]) -> tuple[Manifest, bytes]:
    """The manifest and torrent of a body, checked against each other."""
    manifest_bytes, torrent_bytes = body.get("manifest"), body.get("torrent")
    if not isinstance(manifest_bytes, bytes) or not isinstance(torrent_bytes, bytes):
        raise BadInput("the body needs binary 'manifest' and 'torrent'")
    manifest = Manifest.load(manifest_bytes)
    Torrent.load(torrent_bytes).check_matches(manifest)
    return manifest, torrent_bytes


def signatures_of(body: dict[Any, Any], manifest: Manifest) -> list[Signature]:
    """The publishers' signatures a body carries for ``manifest``: each well-formed, of
    this manifest and valid (whether a host trusts its key is the host's to decide)."""
    raw = body.get("signatures", [])
    if not isinstance(raw, list) or len(raw) > MAX_SIGNATURES:
        raise BadInput(f"'signatures' must be a list of at most {MAX_SIGNATURES}")
    out = []
    for data in raw:
        if not isinstance(data, bytes):
            raise BadInput("each signature must be binary")
        s = Signature.from_wire(data)
        if s.manifest != manifest.digest or s.ref != manifest.ref:
            raise BadInput(f"a signature by key {s.key.id} is of another manifest ({s.manifest})")
        if not s.valid():
            raise BadInput(f"the signature by key {s.key.id} does not verify")
        out.append(s)
    return out


async def register(
    state: CoordinatorState,
    ref: ModelRef,
    manifest: Manifest,
    torrent: bytes,
    signatures: list[Signature] | None = None,
) -> dict[str, object]:
    """Point ``ref`` at ``manifest`` (with its torrent), if it agrees with what is held;
    keep the publishers' signatures of it."""
    await _check_consistent(state.registry, manifest, torrent)
    for sig in signatures or ():
        await state.registry.add_signature(
            manifest.digest, sig.key.id, sig.signed_at, sig.to_wire()
        )
    moved = await state.registry.put(ref, manifest, torrent, state.clock())
    state.metrics.registry_ops.labels("publish").inc()
    return {
        "ref": str(ref),
        "digest": str(manifest.digest),
        "moved": moved,
        "info_hash_v1": manifest.info_hash_v1.hex(),
        "info_hash_v2": manifest.info_hash_v2.hex() if manifest.info_hash_v2 else None,
    }


async def _check_consistent(registry: Registry, manifest: Manifest, torrent: bytes) -> None:
    """What is registered is immutable: a torrent stays the bytes first registered under
    its info-hash, and a blob digest keeps the size and chunk digests (at a chunk size)
    it was first listed with. A publish that disagrees is refused (``Conflict``), since
    one of the two publishers describes bytes that are not what the name says.
    The stores insert without replacing, so a race cannot swap either."""
    held = await registry.torrent(manifest.info_hash_v1)
    if held is not None and held != torrent:
        raise Conflict(
            f"a different torrent is registered for info-hash {manifest.info_hash_v1.hex()}",
            "registered torrents never change: publish the torrent the registry holds "
            f"(GET /v1/torrents/{manifest.info_hash_v1.hex()}), or publish changed content",
        )
    others: dict[Digest, Manifest | None] = {}
    for entry in manifest.files:
        first = await registry.manifest_with_blob(entry.sha256)
        if first is None or first == manifest.digest:
            continue
        if first not in others:
            data = await registry.manifest(first)
            others[first] = Manifest.load(data) if data is not None else None
        other = others[first]
        if other is None:
            continue
        theirs = next(f for f in other.files if f.sha256 == entry.sha256)
        same_chunks = other.chunk_size != manifest.chunk_size or (
            theirs.chunk_hashes == entry.chunk_hashes
        )
        if theirs.size != entry.size or not same_chunks:
            raise Conflict(
                f"blob {entry.sha256} ({entry.path}) is registered by {other.ref} with "
                "another size or other chunk digests",
                "a blob digest names one content: one of the two manifests is wrong; "
                "publish the file's real bytes",
            )


@router.get("/resolve/{ref:path}")
async def resolve(request: Request, ref: RefPath) -> Response:
    """The manifest a tag points at now."""
    state = state_of(request)
    model = ModelRef.parse(ref)
    digest = await state.registry.resolve(model)
    data = await state.registry.manifest(digest) if digest else None
    if digest is None or data is None:
        raise NotFound(
            f"model {model} is not published here",
            "check the name against what the coordinator lists (its /v1/models)",
        )
    state.metrics.registry_ops.labels("resolve").inc()
    if state.ingests.stale(model, state.clock()):  # answered now; checked upstream beside
        state.metrics.registry_ops.labels("ingest_recheck").inc()
    view: Any = Manifest.load(data).to_json() if wants_json(request) else data
    signatures = await state.registry.signatures(digest)
    answer = {"ref": str(model), "digest": str(digest), "manifest": view}
    return respond(request, {**answer, "signatures": signatures})


@router.get("/manifests/{digest}")
async def manifest(request: Request, digest: str) -> Response:
    """A manifest by digest: canonical msgpack bytes, or its JSON view."""
    state = state_of(request)
    d = Digest.parse(digest)
    data = await state.registry.manifest(d)
    if data is None:
        raise NotFound(f"manifest {d} is not here")
    state.metrics.registry_ops.labels("manifest").inc()
    if wants_json(request):
        return respond(request, Manifest.load(data).to_json())
    return Response(
        data,
        media_type=MANIFEST_MEDIA_TYPE,
        headers={"ETag": f'"{d}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.get("/manifests/{digest}/signatures")
async def manifest_signatures(request: Request, digest: str) -> Response:
    """The publishers' signatures of a manifest: each verifiable by anyone, trusted by
    the hosts that trust its key (shoal/signing.py)."""
    state = state_of(request)
    return respond(request, {"signatures": await state.registry.signatures(Digest.parse(digest))})


@router.get("/torrents/{info_hash}")
async def torrent(request: Request, info_hash: str) -> Response:
    """A torrent by v1, v2 or truncated-v2 info-hash (hex)."""
    state = state_of(request)
    if not _HEX.fullmatch(info_hash):
        raise BadInput("info-hash must be 40 or 64 lowercase hex digits")
    data = await state.registry.torrent(bytes.fromhex(info_hash))
    if data is None:
        raise NotFound(f"torrent {info_hash} is not here")
    state.metrics.registry_ops.labels("torrent").inc()
    return Response(data, media_type="application/x-bittorrent")


@router.get("/blobs/{digest}/chunks")
async def chunk_map(request: Request, digest: str) -> Response:
    """Chunk size and chunk digests of a blob, from a manifest that lists it (edges verify
    every chunk against this)."""
    state = state_of(request)
    d = Digest.parse(digest)
    holder = await state.registry.manifest_with_blob(d)
    data = await state.registry.manifest(holder) if holder else None
    if data is None:
        raise NotFound(f"no published manifest lists blob {d}")
    m = Manifest.load(data)
    entry = next(f for f in m.files if f.sha256 == d)
    return respond(request, ChunkMap(d, entry.size, m.chunk_size, entry.chunk_hashes).to_wire())


@router.get("/models")
async def models(request: Request) -> Response:
    """Every current tag and the manifest it points at."""
    records = await state_of(request).registry.models()
    return respond(
        request,
        {
            "models": [
                {"ref": r.ref, "digest": str(r.digest), "updated": r.created} for r in records
            ]
        },
    )


@router.get("/history/{ref:path}")
async def history(request: Request, ref: RefPath) -> Response:
    """Where a tag has pointed, oldest first (a null digest is a deletion)."""
    model = ModelRef.parse(ref)
    records = await state_of(request).registry.history(model)
    if not records:
        raise NotFound(f"model {model} was never published here")
    return respond(
        request,
        {
            "ref": str(model),
            "history": [
                {"digest": str(r.digest) if r.digest else None, "created": r.created}
                for r in records
            ],
        },
    )


@router.delete("/models/{ref:path}")
async def delete(request: Request, ref: RefPath, authorization: Auth = None) -> Response:
    """Delete a tag (publisher token); its manifests stay, and its history."""
    state = state_of(request)
    who = state.auth.publisher(authorization)
    model = ModelRef.parse(ref)
    if not await state.registry.delete_tag(model, state.clock()):
        raise NotFound(f"model {model} is not published here")
    await state.registry.audit(AuditEntry(state.clock(), who, "delete", str(model), None))
    state.metrics.registry_ops.labels("delete").inc()
    return respond(request, {"ref": str(model), "deleted": True})


@router.get("/audit")
async def audit(request: Request, limit: int = 100, authorization: Auth = None) -> Response:
    """The newest writes to the registry, newest first: who (a token's role and place in
    its list, never the token), what, which tag, when (publisher token)."""
    state = state_of(request)
    state.auth.publisher(authorization)
    if not 1 <= limit <= 10_000:
        raise BadInput("'limit' must be 1 to 10000")
    entries = await state.registry.audit_log(limit)
    return respond(request, {"audit": [e.as_dict() for e in entries]})
