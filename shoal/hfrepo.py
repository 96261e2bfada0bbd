"""A Hugging Face repo as shoal names it: its kind and id, checked as the Hub checks them,
and the model reference a repo at a revision is kept and shared under.

The mapping (a reference must fit ollama's 128 bytes, so a repo id longer than about 70
characters cannot be named, and is refused with a reason):

    model   org/name at R   ->  hf.co/org/name:R
    model   name at R       ->  hf.co/_/name:R          (the Hub's legacy ids with no org)
    dataset org/name at R   ->  datasets.hf.co/org/name:R

R is a 40-hex commit or a branch or tag name of tag characters (``main``, ``v1.0``); a
revision with ``/`` in it (``refs/pr/1``) has no reference and is asked by commit. An org
with a ``.`` has none either (a reference's namespace has no dots).

Also the Hub's own digests of a file, which name it in a Hub cache: the git blob SHA-1 of
its bytes (small files), and for a file kept in LFS the SHA-256 of its bytes and the git
blob SHA-1 of its LFS pointer (what the tree lists as its ``oid``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from shoal.errors import BadInput, InvalidRef
from shoal.ref import ModelRef

Kind = Literal["model", "dataset"]

MAX_REPO_ID = 96
HOSTS: dict[str, Kind] = {"hf.co": "model", "datasets.hf.co": "dataset"}
NO_ORG = "_"
_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# the Hub's error codes, as an error message carries them on ("[GatedRepo] ...")
CODES = {"RepoNotFound": 404, "RevisionNotFound": 404, "EntryNotFound": 404, "GatedRepo": 403}
_CODED = re.compile(r"\[(RepoNotFound|RevisionNotFound|EntryNotFound|GatedRepo)\]")


class BadRepo(BadInput):
    """A repo id or revision that is not one the Hub could have."""


@dataclass(frozen=True, slots=True)
class HfRepo:
    kind: Kind
    id: str  # "org/name" or "name"

    @classmethod
    def parse(cls, kind: Kind, repo_id: str) -> HfRepo:
        parts = repo_id.split("/")
        if (
            not 1 <= len(parts) <= 2
            or len(repo_id) > MAX_REPO_ID
            or not all(_PART.fullmatch(p) for p in parts)
            or "--" in repo_id
            or ".." in repo_id
        ):
            shown = repo_id if len(repo_id) <= 120 else repo_id[:120] + "..."
            raise BadRepo(f"invalid repo id {shown!r}", "a repo id is [org/]name")
        return cls(kind, repo_id)

    @property
    def host(self) -> str:
        return next(h for h, k in HOSTS.items() if k == self.kind)

    @property
    def api(self) -> str:
        """The API path prefix: ``/api/models/org/name``."""
        return f"/api/{self.kind}s/{self.id}"

    @property
    def files(self) -> str:
        """The resolve path prefix: ``/org/name`` or ``/datasets/org/name``."""
        return ("/datasets/" if self.kind == "dataset" else "/") + self.id

    @property
    def cache_dir(self) -> str:
        """Its folder in a Hub cache: ``models--org--name``."""
        return f"{self.kind}s--" + self.id.replace("/", "--")

    def ref(self, revision: str) -> ModelRef:
        """The reference this repo at ``revision`` is kept under; ``BadRepo`` if none."""
        org, _, name = self.id.rpartition("/")
        try:
            return ModelRef(self.host, org or NO_ORG, name, revision)
        except InvalidRef as exc:
            raise BadRepo(
                f"{self.id} at {revision!r} has no shoal reference: {exc.message}",
                "ask by a commit (40 hex) or a plain branch name; repo ids past about "
                "70 characters and orgs with a '.' are not served",
            ) from None

    @classmethod
    def of_ref(cls, ref: ModelRef) -> HfRepo | None:
        """The repo a reference names, or None if it names none (an ollama model)."""
        kind = HOSTS.get(ref.host)
        if kind is None:
            return None
        return cls.parse(
            kind, ref.name if ref.namespace == NO_ORG else f"{ref.namespace}/{ref.name}"
        )


def code_of(text: str) -> str | None:
    """The Hub's error code an error message carries, if any (within its first 1000
    characters: a message passed on by the fleet gains a prefix)."""
    m = _CODED.search(text[:1000])
    return m.group(1) if m else None


def is_commit(revision: str) -> bool:
    return _COMMIT.fullmatch(revision) is not None


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data``: what the Hub names a small file by."""
    h = hashlib.sha1(f"blob {len(data)}\0".encode(), usedforsecurity=False)
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer git keeps in place of a large file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )
