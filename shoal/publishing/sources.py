"""What can be published: a file, a directory (Hugging Face snapshots included).

A directory is walked recursively in canonical order. A symlink is followed
only when its target lies inside the source directory, or, for a Hugging Face
snapshot (whose files link to ``../../blobs/``), inside the nearest enclosing
``models--*`` folder. Any other symlink, a dangling one, and special files are
refused: publishing must never pick up bytes from outside what was named.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from shoal import hf_revision
from shoal.digest import Digest
from shoal.errors import InvalidPath, SourceError
from shoal.ref import ModelRef
from shoal.relpath import RelPath

_HF_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to publish: on disk (``path``) or in memory (``data``)."""

    rel: RelPath
    size: int
    path: Path | None = None
    data: bytes | None = None
    media_type: str | None = None
    expected: Digest | None = None  # the digest it must hash to, when known


@dataclass(frozen=True, slots=True)
class Source:
    """A resolved source: its files in canonical order, and where it lives."""

    description: str
    files: tuple[SourceFile, ...]
    default_ref: ModelRef | None = None
    root: Path | None = None  # output must not land inside this


def canonical(files: list[SourceFile]) -> tuple[SourceFile, ...]:
    """Sort files into canonical order, refusing duplicates."""
    ordered = sorted(files, key=lambda f: f.rel.sort_key)
    for a, b in itertools.pairwise(ordered):
        if a.rel == b.rel:
            raise SourceError(f"two files map to the same path {a.rel}")
    return tuple(ordered)


def file_source(path: Path) -> Source:
    """A single regular file (a symlink named directly is followed)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise _os_error(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{path} is not a regular file or directory")
    _check_readable(path)
    rel = _rel([path.name], path)
    return Source(
        description=str(path),
        files=(SourceFile(rel=rel, size=st.st_size, path=path),),
        root=None,
    )


def directory_source(root: Path, hf_revision_file: bytes | None = None) -> Source:
    """All files under ``root``, following only symlinks that stay inside. A Hub
    snapshot also carries its revision file: ``hf_revision_file``, else the one its
    cache folder gives."""
    real_root = Path(os.path.realpath(root))
    allowed = [real_root]
    hf_repo = _enclosing_hf_repo(real_root)
    if hf_repo is not None:
        allowed.append(hf_repo)
    files: list[SourceFile] = []
    _walk(root, (), allowed, {_inode(real_root)}, files)
    if not files:
        raise SourceError(f"directory {root} contains no files", "point at a model's files")
    revision = hf_revision_file
    if revision is None and hf_repo is not None:
        revision = hf_revision.of_snapshot(hf_repo, real_root)
    if revision is not None:
        files.append(
            SourceFile(
                rel=RelPath(hf_revision.PATH),
                size=len(revision),
                data=revision,
                media_type=hf_revision.MEDIA_TYPE,
            )
        )
    return Source(description=str(root), files=canonical(files), root=real_root)


def _walk(
    directory: Path,
    parts: tuple[str, ...],
    allowed: list[Path],
    ancestors: set[tuple[int, int]],
    out: list[SourceFile],
) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        raise _os_error(directory, exc) from None
    for entry in entries:
        path = read_from = Path(entry.path)
        rel_parts = (*parts, entry.name)
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = Path(os.path.realpath(path))
                if not target.exists():
                    raise SourceError(f"symlink {path} is dangling", "fix or remove the link")
                if not any(target.is_relative_to(a) for a in allowed):
                    raise SourceError(
                        f"symlink {path} points outside the source, to {target}",
                        "copy the file into the source directory, or remove the link",
                    )
                st = target.stat()
                read_from = target  # read the checked target, not the link again
        except OSError as exc:
            raise _os_error(path, exc) from None
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                raise SourceError(f"symlink {path} makes a directory loop")
            _walk(read_from, rel_parts, allowed, ancestors | {key}, out)
        elif stat.S_ISREG(st.st_mode):
            _check_readable(read_from)
            rel = _rel(list(rel_parts), path)
            out.append(SourceFile(rel=rel, size=st.st_size, path=read_from))
        else:
            raise SourceError(
                f"{path} is not a regular file (a device, socket or pipe)",
                "remove it from the source directory",
            )


def _enclosing_hf_repo(real_root: Path) -> Path | None:
    for candidate in (real_root, *real_root.parents):
        if candidate.name.startswith(_HF_REPO_PREFIXES):
            return candidate
    return None


def _inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino)


def _rel(parts: list[str], path: Path) -> RelPath:
    try:
        return RelPath.from_parts(parts)
    except InvalidPath as exc:
        raise SourceError(f"cannot publish {path}: {exc.message}", "rename the file") from None


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _os_error(path, exc) from None


def _os_error(path: Path, exc: OSError) -> SourceError:
    reason = exc.strerror or str(exc)
    hints = {
        "ENOENT": "check the path",
        "EACCES": "check its permissions, or run as a user who can read it",
        "EPERM": "check its permissions, or run as a user who can read it",
        "ELOOP": "fix the symlink loop",
    }
    name = errno.errorcode.get(exc.errno or 0, "")
    return SourceError(f"cannot read {path}: {reason}", hints.get(name, "check the path"))
