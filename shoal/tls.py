"""One TLS context per process, shared by every HTTP client shoal opens.

Building a context loads the CA bundle: 16-30 ms of CPU measured here, and a pull used to
build four (the CLI, the coordinator client twice, the chunk client). ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` are honoured, as httpx does by default.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
