"""The Hugging Face revision a model was published from: its commit and the refs
(``main``, a branch, ``pr/1``) that pointed at it.

A model published from a snapshot (``models--org--name/snapshots/<commit>/``) carries
them as one small file, ``PATH``, marked with ``MEDIA_TYPE``, so an export into a Hub
cache uses the original commit and ``hf_hub_download(..., revision=<commit>)`` finds it
offline. The file is canonical JSON (sorted keys, no spaces): the same snapshot always
publishes the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shoal.errors import BadInput

PATH = ".shoal/hf-revision.json"
MEDIA_TYPE = "application/vnd.shoal.hf-revision.v1+json"
MAX_REFS = 64
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REF_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def of_snapshot(repo: Path, snapshot: Path) -> bytes | None:
    """The revision file for ``snapshot`` if it is ``repo/snapshots/<commit>``; the refs
    are the files under ``repo/refs`` that hold that commit."""
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
    return encode(snapshot.name, refs)


def encode(commit: str, refs: list[str]) -> bytes:
    return json.dumps(
        {"commit": commit, "refs": sorted(refs)}, separators=(",", ":"), sort_keys=True
    ).encode()


def decode(data: bytes) -> tuple[str, list[str]]:
    """(commit, refs) from a revision file; ``BadInput`` if it is not one."""
    try:
        doc: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("the model's Hugging Face revision file is not JSON") from None
    commit = doc.get("commit") if isinstance(doc, dict) else None
    refs = doc.get("refs") if isinstance(doc, dict) else None
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise BadInput("the model's Hugging Face revision file has no valid commit")
    if (
        not isinstance(refs, list)
        or len(refs) > MAX_REFS
        or not all(isinstance(r, str) and valid_ref(r) for r in refs)
    ):
        raise BadInput("the model's Hugging Face revision file has invalid refs")
    return commit, refs


def valid_ref(name: str) -> bool:
    """A ref name safe as a path under ``refs/``: ``main``, ``pr/1``, ``v1.0``."""
    parts = name.split("/")
    return 0 < len(parts) <= 4 and all(_REF_PART.fullmatch(p) and ".." not in p for p in parts)
