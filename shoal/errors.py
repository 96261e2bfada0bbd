"""The one error tree of shoal, and the one table from it to exit codes and HTTP statuses.

Every error a user can meet is a ``ShoalError``: its message says what happened and to
what, and its ``hint`` says what to do next. The CLI prints ``message`` and ``hint`` and
exits with ``exit_code``; servers answer with ``http_status``; no traceback reaches a
user. Errors of other libraries (sockets, httpx, libtorrent, redis, sqlite, ``OSError``)
are mapped into this tree where they are first caught. Each class carries its row of
the table::

                                         exit  HTTP
    ShoalError                              1   500   something failed
    ├── BadInput                            2   400   the input (a user's or the wire's) is wrong
    │   ├── InvalidDigest                             a digest string is malformed
    │   ├── InvalidRef                                a model reference is malformed
    │   ├── InvalidPath                               a path inside a model is unsafe
    │   ├── InvalidSize                               a size or chunk size is out of range
    │   ├── InvalidManifest                           manifest bytes fail to validate
    │   ├── InvalidTorrent                            torrent bytes fail to validate
    │   ├── SourceError                               a model source cannot be published
    │   ├── OutputExists                              the output location is taken
    │   └── TooLarge                         2   413   a body or header exceeds its limit
    ├── NotFound                            3   404   a model, manifest, blob or swarm is unknown
    ├── AuthError                           4   401   a token is missing; 403 not allowed,
    │                                                 407 refused by a proxy (``status``)
    ├── LocalError                          5   507   this host cannot do it: a full disk,
    │                                                 permissions, a port in use, libtorrent
    ├── RemoteError                         6   502   a server could not be reached or failed
    │   └── Timeout                         6   504   ... in time
    ├── IntegrityError                      1   502   bytes do not match their digest
    ├── Conflict                            1   409   the request needs other state
    └── RateLimited                         1   429   too many requests from one address

    anything else (a bug)                  70   500   "internal error", no traceback
"""

from __future__ import annotations

INTERNAL_EXIT = 70  # a bug (sysexits' EX_SOFTWARE)


class ShoalError(Exception):
    """Root of every error shoal raises on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class BadInput(ShoalError):
    """The input is wrong, a user's or the wire's; fixing it is up to whoever sent it."""

    exit_code = 2
    http_status = 400


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


class TooLarge(BadInput):
    """A body, header or file exceeds its limit."""

    http_status = 413


class IntegrityError(ShoalError):
    """Bytes do not match the digest they are supposed to have."""

    http_status = 502


class NotFound(ShoalError):
    """A model, manifest, blob, torrent or swarm is unknown."""

    exit_code = 3
    http_status = 404


class AuthError(ShoalError):
    """A token is missing (``status`` 401), does not allow the request (403), or a proxy
    refused the credentials (407)."""

    exit_code = 4
    http_status = 401

    def __init__(self, message: str, hint: str | None = None, status: int = 401) -> None:
        super().__init__(message, hint)
        self.status = status
        self.http_status = status


class LocalError(ShoalError):
    """This host cannot do it: a full disk, missing permissions, a port in use, a
    libtorrent session that will not start. The environment must change, not the input."""

    exit_code = 5
    http_status = 507


class RemoteError(ShoalError):
    """A server could not be reached, or answered with an error of its own; ``status``
    is what a server passing the failure on answers (502, or 404 when upstream has
    no such thing)."""

    exit_code = 6
    http_status = 502

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        if status is not None:
            self.http_status = status

    @property
    def status(self) -> int:
        return self.http_status


class Timeout(RemoteError):
    """A server did not answer in time."""

    http_status = 504


class RateLimited(ShoalError):
    """Too many requests from one address."""

    http_status = 429


class Conflict(ShoalError):
    """The request needs state the server does not hold (e.g. a delta before a full report)."""

    http_status = 409
