"""Putting a stored model where other tools look for it, by hard link (no second copy).

``ollama``: ``<dir>/manifests/<host>/<ns>/<name>/<tag>`` (ollama's manifest JSON) and
``<dir>/blobs/sha256-<hex>``. A model published from ollama's store carries its own
manifest JSON (``ollama-manifest.json``), exported byte for byte; a model with exactly
one ``.gguf`` file gets a manifest made for it.

``hf``: the Hugging Face cache: ``<dir>/models--<org>--<name>/blobs/<etag>``,
``snapshots/<commit>/<path>`` (relative symlinks into ``blobs/``) and ``refs/main``.
LFS-style files are named by SHA-256, small text files by their git blob SHA-1, as the
Hub names them. The commit and refs are the source snapshot's when the model was
published from one (``shoal/hf_revision.py``), else the commit is derived from the
manifest digest and ``refs/main`` points at it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from peer.store import Store
from shoal import hf_revision
from shoal import ollama_manifest as om
from shoal.digest import Digest
from shoal.errors import BadInput, IntegrityError
from shoal.fsutil import atomic_write
from shoal.hfrepo import git_blob_sha1
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef

OLLAMA_MANIFEST = "ollama-manifest.json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
LFS_SUFFIXES = (
    ".safetensors",
    ".gguf",
    ".bin",
    ".pt",
    ".pth",
    ".onnx",
    ".h5",
    ".ckpt",
    ".model",
    ".msgpack",
    ".npz",
    ".tflite",
    ".ot",
)
LFS_MIN_SIZE = 10 << 20


def export_ollama(store: Store, ref: ModelRef, manifest: Manifest, target: Path) -> Path:
    """Write the model into an ollama models dir; returns the manifest path written."""
    files = {f.path.value: f for f in manifest.files}
    if OLLAMA_MANIFEST in files:
        raw = store.blob_path(files[OLLAMA_MANIFEST].sha256).read_bytes()
        held = {f.sha256: f.size for f in manifest.files}
        for b in _ollama_blobs(store, raw, held, ref):
            _link(store.blob_path(b.digest), target / "blobs" / b.digest.filename, b.size)
    else:
        ggufs = [f for f in manifest.files if f.path.value.endswith(".gguf")]
        if len(ggufs) != 1:
            raise BadInput(
                f"{ref} is not an ollama model (no ollama manifest, {len(ggufs)} .gguf files)",
                "export it with --hf instead",
            )
        raw = _made_manifest(store, ggufs[0], target)
    path = target / "manifests" / ref.ollama_path
    atomic_write(path, raw)
    return path


def _made_manifest(store: Store, gguf: FileEntry, target: Path) -> bytes:
    _link(store.blob_path(gguf.sha256), target / "blobs" / gguf.sha256.filename, gguf.size)
    config = json.dumps(
        {
            "model_format": "gguf",
            "model_family": "",
            "model_families": None,
            "model_type": "",
            "file_type": "",
            "rootfs": {"type": "layers", "diff_ids": [str(gguf.sha256)]},
        },
        separators=(",", ":"),
    ).encode()
    config_digest = Digest.of(config)
    config_path = target / "blobs" / config_digest.filename
    if not config_path.exists():
        atomic_write(config_path, config)
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": str(config_digest),
            "size": len(config),
        },
        "layers": [{"mediaType": MODEL_MEDIA_TYPE, "digest": str(gguf.sha256), "size": gguf.size}],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _ollama_blobs(
    store: Store, raw: bytes, held: dict[Digest, int], ref: ModelRef
) -> list[om.Blob]:
    """The blobs ollama's manifest (``raw``, exported as it is) needs from the model: all
    of a plain manifest's; of a list, its first runnable child's (all of them) and every
    other child's the model holds in full."""
    try:
        doc = om.parse(raw, f"of {ref}")
        if not om.is_list(doc):
            return _complete(om.blobs(doc, f"of {ref}"), held, ref, required=True)
        out: list[om.Blob] = []
        for n, child in enumerate(om.children(doc, f"of {ref}")):
            required = n == 0 and om.runnable(child)
            own, child_doc = [], child.doc
            if child.ref is not None:
                if held.get(child.ref.digest) != child.ref.size:
                    _complete([child.ref], held, ref, required=required)
                    continue
                child_doc = om.parse(store.blob_path(child.ref.digest).read_bytes(), f"of {ref}")
                own = [child.ref]
            assert child_doc is not None
            out += own + _complete(om.blobs(child_doc, f"of {ref}"), held, ref, required=required)
        return out
    except BadInput as exc:
        raise IntegrityError(f"the ollama manifest of {ref} is not one: {exc.message}") from None


def _complete(
    blobs: list[om.Blob], held: dict[Digest, int], ref: ModelRef, *, required: bool
) -> list[om.Blob]:
    """``blobs`` if the model holds them all; else [] (or ``IntegrityError`` if required)."""
    for b in blobs:
        if held.get(b.digest) != b.size:
            if required:
                raise IntegrityError(f"{ref}: ollama layer {b.digest} is not in the model")
            return []
    return blobs


def export_hf(store: Store, ref: ModelRef, manifest: Manifest, target: Path) -> Path:
    """Write the model into a Hugging Face cache dir; returns the snapshot directory."""
    name = ref.name if ref.namespace == "library" else f"{ref.namespace}--{ref.name}"
    commit, refs = manifest.digest.hex[:40], ["main"]
    etags: dict[str, str] = {}
    files = list(manifest.files)
    marked = [
        f
        for f in files
        if f.path.value == hf_revision.PATH and f.media_type == hf_revision.MEDIA_TYPE
    ]
    if marked:  # published from a Hub snapshot: its own repo, commit, refs and names
        try:
            rev = hf_revision.Revision.decode(store.blob_path(marked[0].sha256).read_bytes())
        except BadInput as exc:
            raise IntegrityError(f"{ref}: {exc.message}") from None
        files.remove(marked[0])
        commit, refs, etags = rev.commit, list(rev.refs) or ["main"], rev.etags
        name = rev.repo.cache_dir.split("--", 1)[1] if rev.repo is not None else name
    kind = rev.repo.kind if marked and rev.repo is not None else "model"
    repo = target / f"{kind}s--{name}"
    snapshot = repo / "snapshots" / commit
    for f in files:
        blob_name = _hf_etag(store, f, etags.get(f.path.value))
        _link(store.blob_path(f.sha256), repo / "blobs" / blob_name, f.size)
        link = snapshot / f.path.value
        link.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(repo / "blobs" / blob_name, link.parent)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(rel)
    for r in refs:
        atomic_write(repo / "refs" / r, commit.encode())
    return snapshot


def _hf_etag(store: Store, f: FileEntry, claimed: str | None) -> str:
    """The name the Hub gives the file: the one recorded when it was published from the
    Hub, proven here; else by the Hub's rule (LFS for weights and big files)."""
    path = store.blob_path(f.sha256)
    if claimed is not None:
        try:
            return hf_revision.proven_etag(claimed, f.sha256.hex, path.read_bytes)
        except IntegrityError as exc:
            raise IntegrityError(f"{f.path}: {exc.message}") from None
    if f.path.value.endswith(LFS_SUFFIXES) or f.size >= LFS_MIN_SIZE:
        return f.sha256.hex
    return git_blob_sha1(path.read_bytes())


def _link(src: Path, dst: Path, size: int) -> None:
    """Hard-link ``src`` at ``dst`` (copy across filesystems); keep a right-sized existing one."""
    try:
        if dst.stat().st_size == size:
            return
        dst.unlink()
    except FileNotFoundError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
