"""URLs given by users (trackers, web seeds, coordinators), checked once."""

from __future__ import annotations

from urllib.parse import urlsplit

from shoal.errors import BadInput


def check_url(url: str, what: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """Return ``url`` if it is absolute with one of ``schemes`` and a host; raises ``BadInput``."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or parts.scheme not in schemes
        or not parts.hostname
        or not port_ok
        or any(c.isspace() or ord(c) < 0x20 for c in url)
    ):
        raise BadInput(
            f"invalid {what} URL {url!r}",
            f"expected an absolute {' or '.join(schemes)} URL, e.g. {schemes[0]}://host:port/",
        )
    return url


def directory_url(url: str) -> str:
    """``url`` with a trailing slash, so relative names resolve under it (BEP 19)."""
    return url if url.endswith("/") else url + "/"
