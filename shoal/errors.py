"""The one error tree of shoal.

Every error a user can meet is a ``ShoalError``: its message says what
happened and to what, and its ``hint`` says what to do next. The CLI prints
``message`` and ``hint`` and exits with ``exit_code``; no traceback reaches a
user.

    ShoalError                      exit 1: something failed
    ├── BadInput                    exit 2: the user's input is wrong
    │   ├── InvalidDigest           a digest string is malformed
    │   ├── InvalidRef              a model reference is malformed
    │   ├── InvalidPath             a path inside a model is unsafe or malformed
    │   ├── InvalidSize             a size or chunk size is malformed or out of range
    │   ├── InvalidManifest         manifest bytes fail to decode or validate
    │   ├── InvalidTorrent          torrent bytes fail to decode or validate
    │   ├── SourceError             a model source on disk cannot be published
    │   └── OutputExists            the output location is already taken
    ├── IntegrityError              bytes do not match their digest
    ├── NotFound                    a model, manifest, torrent or swarm is unknown
    ├── AuthError                   a token is missing (401) or not allowed (403)
    ├── RateLimited                 too many requests from one address (429)
    ├── Conflict                    the request needs state the server lacks (409)
    └── RemoteError                 a server could not be reached or failed
"""

from __future__ import annotations


class ShoalError(Exception):
    """Root of every error shoal raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class BadInput(ShoalError):
    """The user's input is wrong; fixing it is up to them."""

    exit_code = 2


class InvalidDigest(BadInput):
    """A digest string is not ``sha256:<64 lowercase hex>``."""


class InvalidRef(BadInput):
    """A model reference is not ``[host[:port]/][namespace/]name[:tag]``."""


class InvalidPath(BadInput):
    """A file path inside a model is unsafe (absolute, ``..``, NUL, ...)."""


class InvalidSize(BadInput):
    """A size or chunk size is malformed or out of range."""


class InvalidManifest(BadInput):
    """Manifest bytes fail to decode or to validate."""


class InvalidTorrent(BadInput):
    """Torrent bytes fail to decode or to validate."""


class SourceError(BadInput):
    """A model source on disk cannot be published as it is."""


class OutputExists(BadInput):
    """The output location is already taken."""


class IntegrityError(ShoalError):
    """Bytes do not match the digest they are supposed to have."""


class NotFound(ShoalError):
    """A model, manifest, torrent or swarm is unknown."""


class AuthError(ShoalError):
    """A token is missing (``status`` 401) or does not allow the request (403)."""

    def __init__(self, message: str, hint: str | None = None, status: int = 401) -> None:
        super().__init__(message, hint)
        self.status = status


class RateLimited(ShoalError):
    """Too many requests from one address."""


class Conflict(ShoalError):
    """The request needs state the server does not hold (e.g. a delta before a full report)."""


class RemoteError(ShoalError):
    """A server could not be reached, or answered with an error of its own."""
