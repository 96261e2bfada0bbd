"""``ModelRef``: ``[host[:port]/][namespace/]name[:tag]``, parsed the way ollama does.

``deepseek-r1:7b`` is ``registry.ollama.ai/library/deepseek-r1:7b``; the tag
defaults to ``latest``. With two path parts the first is a host when it looks
like one (has a ``.`` or a ``:port``, or is ``localhost``), as Docker decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.errors import InvalidRef

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MAX_REF_LEN = 512
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_HINT = "expected [host[:port]/][namespace/]name[:tag], e.g. 'deepseek-r1:7b'"


@dataclass(frozen=True, slots=True, order=True)
class ModelRef:
    """A validated model reference; build one with ``ModelRef.parse``."""

    host: str
    namespace: str
    name: str
    tag: str

    def __post_init__(self) -> None:
        _check_host(self.host, self.host)
        for what, value in (("namespace", self.namespace), ("name", self.name), ("tag", self.tag)):
            _check_part(what, value, value)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse a reference; raises ``InvalidRef`` saying which part is wrong."""
        if not isinstance(text, str) or not text:
            raise InvalidRef("empty model reference", _HINT)
        if len(text) > _MAX_REF_LEN:
            raise InvalidRef(f"model reference longer than {_MAX_REF_LEN} characters", _HINT)
        rest, tag = text, DEFAULT_TAG
        colon = text.rfind(":")
        if colon > text.rfind("/"):
            rest, tag = text[:colon], text[colon + 1 :]
            _check_part("tag", tag, text)
        parts = rest.split("/")
        if any(p in (".", "..") for p in parts):
            raise InvalidRef(f"model reference {text!r} contains a '.' or '..' part", _HINT)
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 1:
            (name,) = parts
        elif len(parts) == 2:
            first, name = parts
            if _looks_like_host(first):
                host = first
            else:
                namespace = first
        elif len(parts) == 3:
            host, namespace, name = parts
        else:
            raise InvalidRef(f"model reference {text!r} has too many '/' parts", _HINT)
        _check_host(host, text)
        _check_part("namespace", namespace, text)
        _check_part("name", name, text)
        return cls(host, namespace, name, tag)

    @property
    def short(self) -> str:
        """``namespace/name:tag``, the form shown to users and used in manifests."""
        return f"{self.namespace}/{self.name}:{self.tag}"

    @property
    def slug(self) -> str:
        """``name-tag``: one safe path segment (output dirs, torrent names)."""
        return f"{self.name}-{self.tag}"

    def __str__(self) -> str:
        if self.host == DEFAULT_HOST:
            return self.short
        return f"{self.host}/{self.short}"


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def _check_host(host: str, text: str) -> None:
    name, sep, port = host.partition(":")
    ok = bool(_HOST.fullmatch(name)) and len(host) <= 253
    if sep:
        ok = ok and port.isascii() and port.isdigit() and 0 < int(port) < 65536 and port[0] != "0"
    if not ok:
        raise InvalidRef(f"invalid host {host!r} in model reference {text!r}", _HINT)


def _check_part(what: str, value: str, text: str) -> None:
    if not value:
        raise InvalidRef(f"empty {what} in model reference {text!r}", _HINT)
    if not _PART.fullmatch(value):
        raise InvalidRef(
            f"invalid {what} {value!r} in model reference {text!r}",
            "use letters, digits, '.', '_' or '-', starting with a letter or digit, "
            "at most 80 characters",
        )
