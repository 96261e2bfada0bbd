"""The Hugging Face revision a model was published from: the repo, its commit, the refs
(``main``, a branch, ``pr/1``) that pointed at it, each file's Hub ETag, and whether the
repo is gated upstream.

A model published from a snapshot (``models--org--name/snapshots/<commit>/``) or pulled
through from the Hub carries them as one small file, ``PATH``, marked with
``MEDIA_TYPE``, so an export into a Hub cache uses the original commit and names, and an
agent's mirror answers the Hub's API as the Hub did. The file is canonical JSON (sorted
keys, no spaces): the same snapshot always publishes the same bytes. Files written before
the repo and ETags were recorded (``commit`` and ``refs`` only) still decode.

An ETag is a claim until proven: a 64-hex one must be the file's SHA-256 (which the store
proves), a 40-hex one its git blob SHA-1 (``proven_etag`` hashes it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import BadInput, IntegrityError
from shoal.hfrepo import BadRepo, HfRepo, git_blob_sha1

PATH = ".shoal/hf-revision.json"
MEDIA_TYPE = "application/vnd.shoal.hf-revision.v1+json"
MAX_REFS = 64
MAX_FILES = 100_000
MAX_BYTES = 16 << 20
_COMMIT = re.compile(r"[0-9a-f]{40}")
_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True, slots=True)
class Revision:
    commit: str
    refs: tuple[str, ...] = ()
    repo: HfRepo | None = None  # None: a file from before repos were recorded
    etags: dict[str, str] = field(default_factory=dict)  # file path: its Hub ETag
    gated: bool = False

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"commit": self.commit, "refs": sorted(self.refs)}
        if self.repo is not None:
            doc |= {"repo": self.repo.id, "kind": self.repo.kind, "gated": self.gated}
            doc["etags"] = dict(sorted(self.etags.items()))
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Revision:
        """The revision a file records; ``BadInput`` if it is not one."""
        if len(data) > MAX_BYTES:
            raise BadInput("the model's Hugging Face revision file is too big")
        try:
            doc: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise BadInput("the model's Hugging Face revision file is not JSON") from None
        if not isinstance(doc, dict):
            raise BadInput("the model's Hugging Face revision file is not a JSON object")
        commit, refs = doc.get("commit"), doc.get("refs")
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            raise BadInput("the model's Hugging Face revision file has no valid commit")
        if (
            not isinstance(refs, list)
            or len(refs) > MAX_REFS
            or not all(isinstance(r, str) and valid_ref(r) for r in refs)
        ):
            raise BadInput("the model's Hugging Face revision file has invalid refs")
        if "repo" not in doc:
            return cls(commit, tuple(refs))
        repo_id, kind = doc["repo"], doc.get("kind")
        etags, gated = doc.get("etags"), doc.get("gated")
        try:
            if not isinstance(repo_id, str) or kind not in ("model", "dataset"):
                raise BadRepo("no repo id or kind")
            repo = HfRepo.parse(kind, repo_id)
        except BadRepo as exc:
            raise BadInput(f"the model's Hugging Face revision file: {exc.message}") from None
        if (
            not isinstance(etags, dict)
            or len(etags) > MAX_FILES
            or not all(
                isinstance(k, str) and isinstance(v, str) and _ETAG.fullmatch(v)
                for k, v in etags.items()
            )
            or not isinstance(gated, bool)
        ):
            raise BadInput("the model's Hugging Face revision file has invalid ETags")
        return cls(commit, tuple(refs), repo, etags, gated)


def of_snapshot(repo: Path, snapshot: Path) -> bytes | None:
    """The revision file for ``snapshot`` if it is ``repo/snapshots/<commit>``; the refs
    are the files under ``repo/refs`` that hold that commit, the ETags the names of the
    blobs the snapshot's links point at."""
    if snapshot.parent != repo / "snapshots" or not _COMMIT.fullmatch(snapshot.name):
        return None
    refs: list[str] = []
    for path in sorted((repo / "refs").rglob("*")) if (repo / "refs").is_dir() else ():
        name = path.relative_to(repo / "refs").as_posix()
        if not path.is_file() or not valid_ref(name) or len(refs) >= MAX_REFS:
            continue
        try:
            if path.read_text(errors="replace")[:100].strip() == snapshot.name:
                refs.append(name)
        except OSError:
            continue
    kind, _, rest = repo.name.partition("--")
    try:
        hf = HfRepo.parse("model" if kind == "models" else "dataset", rest.replace("--", "/"))
    except BadRepo:
        hf = None
    if kind not in ("models", "datasets") or hf is None:
        return Revision(snapshot.name, tuple(refs)).encode()
    return Revision(snapshot.name, tuple(refs), hf, _linked_etags(repo, snapshot)).encode()


def _linked_etags(repo: Path, snapshot: Path) -> dict[str, str]:
    """Each snapshot file's ETag: the name of the blob under ``repo/blobs`` it links to."""
    blobs = Path(os.path.realpath(repo / "blobs"))
    out: dict[str, str] = {}
    for top, dirs, names in os.walk(snapshot):
        dirs.sort()
        for name in sorted(names):
            link = Path(top, name)
            target = Path(os.path.realpath(link))
            if (
                link.is_symlink()
                and target.parent == blobs
                and _ETAG.fullmatch(target.name)
                and len(out) < MAX_FILES
            ):
                out[link.relative_to(snapshot).as_posix()] = target.name
    return out


def proven_etag(claimed: str | None, sha256: str, read: Callable[[], bytes]) -> str:
    """A file's Hub ETag, proven: ``claimed`` if the bytes hash to it (``read`` gives
    them, only for a 40-hex claim), else ``IntegrityError``; with no claim, its SHA-256."""
    if claimed is None or claimed == sha256:
        return sha256
    if len(claimed) == 40 and git_blob_sha1(read()) == claimed:
        return claimed
    raise IntegrityError(f"the recorded Hub ETag {claimed} does not match the file's bytes")


def valid_ref(name: str) -> bool:
    """A ref name safe as a path under ``refs/``: ``main``, ``pr/1``, ``v1.0``."""
    parts = name.split("/")
    return 0 < len(parts) <= 4 and all(_REF_PART.fullmatch(p) and ".." not in p for p in parts)
